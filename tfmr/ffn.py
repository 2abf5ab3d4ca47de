"""Feed-forward sublayers. Each is `ffn(x) -> (y, aux_loss)`; aux_loss is None unless the
layer adds a training loss of its own (mixture-of-experts balance losses do).

This file holds the classic MLP (up, activation, down). Gated and expert variants plug in here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Position-wise MLP (Vaswani et al. 2017): w2(act(w1 x)), hidden = mult * dim."""

    def __init__(self, dim: int, bias: bool = True, dropout: float = 0.0, mult: float = 4,
                 hidden: int | None = None, activation: str = "gelu"):
        super().__init__()
        hidden = hidden or int(mult * dim)
        self.activation = activation
        self.act = _activation(activation)
        self.w1 = nn.Linear(dim, hidden, bias=bias)  # up
        self.w2 = nn.Linear(hidden, dim, bias=bias)  # down
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor):
        return self.drop(self.w2(self.act(self.w1(x)))), None  # (B, T, dim)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


FFNS = {"mlp": MLP}
FFN_FIXED = ("dim", "bias", "dropout")
