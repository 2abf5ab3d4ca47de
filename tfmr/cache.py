"""Key/value cache for incremental decoding: preallocated once, filled in place.

Each attention layer owns one `KVCache` slot of shape (B, H_kv, max_len, D). `update` writes the
new keys/values at positions [start, start + T) and returns the filled prefix [0, start + T).
Preallocation keeps memory flat and makes the decode step free of reallocations.
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (batch, kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int):
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; asked to write up to {end}")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, H_kv, end, D)

    def bytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search keeps the surviving hypotheses)."""
        self.k = self.k.index_select(0, index)
        self.v = self.v.index_select(0, index)


class DecodeState:
    """Everything a model needs between decoding steps: per-layer KV caches, the position of the
    next token and, for encoder-decoder models, the encoder memory and its padding mask.

    `reorder(index)` keeps batch rows `index` (beam search); it applies to every part.
    """

    def __init__(self, cache: list[KVCache], pos: int = 0, memory: torch.Tensor | None = None,
                 memory_mask: torch.Tensor | None = None):
        self.cache, self.pos = cache, pos
        self.memory, self.memory_mask = memory, memory_mask
        self.cross: list = [None] * len(cache)  # per-layer (k, v) of the memory, computed once
        self.last = None  # the last step's Output (cross-attention weights for copy heads, heatmaps)

    def reorder(self, index: torch.Tensor) -> "DecodeState":
        for c in self.cache:
            c.reorder(index)
        if self.memory is not None:
            self.memory = self.memory.index_select(0, index)
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, index)
        self.cross = [None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))
                      for kv in self.cross]
        return self
