"""Positional information: where each token sits in the sequence.

A position scheme acts in one of three places, so every class here has three hooks and
implements only the one it needs (the others pass their input through):

    embed(x, start)             add a vector to the token embeddings   (sinusoidal, learned)
    rotate(q, k, start)         rotate queries and keys               (RoPE family)
    bias(q_len, k_len, start)   add a bias to the attention scores     (ALiBi family)

`start` is the absolute position of the first token of `x` (non-zero while decoding with a KV
cache). This file holds the absolute schemes and `none`; relative schemes plug in the same way.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class Position(nn.Module):
    """Base class: every hook is the identity."""

    def embed(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, start: int = 0):
        return q, k

    def bias(self, q_len: int, k_len: int, start: int = 0) -> torch.Tensor | None:
        return None


class NoPosition(Position):
    """No positional information at all (NoPE); causal masking alone leaks some order."""


def sinusoid_table(length: int, dim: int, base: float = 10000.0, halves: bool = False) -> torch.Tensor:
    """The table of Vaswani et al. 2017, section 3.5: sin on even, cos on odd dimensions; with
    `halves`, the same columns reordered as all sines then all cosines (Marian, tensor2tensor)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))  # (dim/2,)
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    if halves:
        table = torch.cat([table[:, 0::2], table[:, 1::2]], dim=1)
    return table  # (T, dim)


class Sinusoidal(Position):
    """Fixed sinusoidal absolute positions (https://arxiv.org/abs/1706.03762), any length."""

    def __init__(self, dim: int, context: int, base: float = 10000.0, scale: bool = False, halves: bool = False):
        super().__init__()
        self.dim, self.base, self.halves = dim, base, halves
        # Marian/fairseq scale token embeddings by sqrt(dim) before adding positions.
        self.scale = math.sqrt(dim) if scale else 1.0
        self.register_buffer("table", sinusoid_table(context, dim, base, halves), persistent=False)

    def embed(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        end = start + x.shape[1]
        if end > self.table.shape[0]:  # longer than ever seen: extend the table (no parameters)
            self.table = sinusoid_table(max(end, 2 * self.table.shape[0]), self.dim, self.base, self.halves).to(x.device)
        return x * self.scale + self.table[start:end].to(x.dtype)  # (B, T, dim)

    def extra_repr(self) -> str:
        return f"base={self.base}, scale={self.scale != 1.0}, halves={self.halves}"


class Learned(Position):
    """Learned absolute positions (GPT-2); cannot go past `context`."""

    def __init__(self, dim: int, context: int):
        super().__init__()
        self.context = context
        self.wpe = nn.Embedding(context, dim)

    def embed(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        end = start + x.shape[1]
        if end > self.context:
            raise ValueError(
                f"learned positions cover {self.context} tokens; asked for position {end - 1}. "
                "Use a shorter input, or a scheme that extrapolates (sinusoidal, rope, alibi)."
            )
        idx = torch.arange(start, end, device=x.device)
        return x + self.wpe(idx)  # (B, T, dim) + (T, dim)


POSITIONS = {"none": NoPosition, "sinusoidal": Sinusoidal, "learned": Learned}
# Arguments the builder passes itself; everything else in a Choice is a user option.
POSITION_FIXED = ("dim", "heads", "head_dim", "context")
