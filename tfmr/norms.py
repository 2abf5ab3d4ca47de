"""Normalisation layers: LayerNorm (optional bias) and RMSNorm, behind one seam (`Norm`).

Where a norm sits (pre, post, DeepNorm) is the `Residual` in model.py, not a property of the norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .variant import Variant


class Norm(nn.Module, Variant):
    """Base of the norms: `norm(x (..., dim)) -> (..., dim)`, built from the model's dim and bias
    setting (`receives`); the rest of `__init__` (eps) is options."""

    receives = ("dim", "bias")


class LayerNorm(Norm):
    """LayerNorm (https://arxiv.org/abs/1607.06450) with an optional bias, as GPT-2 / nanoGPT."""

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, bias={self.bias is not None}, eps={self.eps}"


class RMSNorm(Norm):
    """Root-mean-square norm (https://arxiv.org/abs/1910.07467): x / rms(x) * weight, no centring."""

    def __init__(self, dim: int, bias: bool = False, eps: float = 1e-6):
        super().__init__()
        del bias  # RMSNorm has no bias; accepted so every norm builds from the same arguments
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}
