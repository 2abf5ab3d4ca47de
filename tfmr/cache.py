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
