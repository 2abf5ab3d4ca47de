"""Key/value caches for incremental decoding: preallocated once, filled in place.

    KVCache          static: one slot of shape (B, H_kv, max_len, D) per attention layer; `update`
                     writes positions [start, start + T) and returns the filled prefix [0, start + T)
    RollingKVCache   a ring of `window` positions for sliding-window attention: memory bounded by
                     the window however long the sequence; `update` returns the held keys, oldest
                     first, followed by the new ones
    DecodeState      the per-sequence state between decoding steps (caches, position, memory, and
                     the alignment kernels' previous alignments, `align`)

After `update`, `cache.key_start` is the absolute position of the first key returned; attention
shifts its mask by it (`Mask.keys_from`). Preallocation keeps memory flat and makes the decode step
free of reallocations. `kv_bytes_per_token` gives the cache cost of a model shape (MHA vs GQA vs MQA).
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (batch, kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.key_start = 0  # absolute position of the first key returned by `update`

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


class RollingKVCache(KVCache):
    """The last `window` positions of keys and values, in a ring: position p lives in slot
    p % window. Writes must continue where the last one stopped (or restart at 0)."""

    def __init__(self, batch: int, kv_heads: int, window: int, head_dim: int, dtype, device):
        super().__init__(batch, kv_heads, window, head_dim, dtype, device)
        self.window = window
        self.next_pos = 0

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int):
        if start not in (0, self.next_pos):
            raise ValueError(f"rolling KV cache continues at position {self.next_pos}; asked to write at {start}")
        W, T = self.window, k.shape[2]
        held = min(start, W)  # positions [start - held, start) are in the ring
        slots = torch.arange(start - held, start, device=k.device) % W
        k_all = torch.cat((self.k.index_select(2, slots), k), dim=2)  # (B, H_kv, held + T, D), oldest first
        v_all = torch.cat((self.v.index_select(2, slots), v), dim=2)
        keep = min(W, held + T)  # the newest `keep` positions stay in the ring
        end = start + T
        write = torch.arange(end - keep, end, device=k.device) % W
        self.k[:, :, write] = k_all[:, :, -keep:]
        self.v[:, :, write] = v_all[:, :, -keep:]
        self.key_start, self.next_pos = start - held, end
        return k_all, v_all


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype=torch.bfloat16) -> int:
    """Bytes a static KV cache holds per token: keys and values, every layer and key/value head."""
    return 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


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
        self.align: list = [None] * len(cache)  # per-layer state of a stateful cross-attention kernel
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
        for a in self.align:
            if a is not None:
                a.reorder(index)
        return self
