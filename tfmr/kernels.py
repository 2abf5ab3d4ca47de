"""Attention kernels: softmax(q k^T / sqrt(d) + bias, masked) v, computed different ways.

Every kernel is `kernel(q, k, v, mask, bias) -> (out, weights_or_None)` with
q: (B, H, Tq, D), k and v: (B, H, Tk, D) (key/value heads already expanded for GQA),
`mask` a `Mask` (which keys each query may see) and `bias` an additive (H, Tq, Tk) tensor or None.

    eager   the reference: plain matmuls, returns the attention weights
    sdpa    torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient on GPU)

A `Mask` is described, not materialised, so a kernel can take a fast path (SDPA's `is_causal`)
and only build the dense boolean matrix when it has to.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Mask:
    """Which keys each query may attend to.

    causal:      query i sees keys at positions <= its own position
    q_start:     absolute position of the first query (keys start at 0); set while decoding
    key_padding: (B, Tk) bool, True for real tokens, False for padding; None when there is none
    """

    causal: bool = False
    q_start: int = 0
    key_padding: torch.Tensor | None = None

    def __post_init__(self):
        self._dense: dict = {}  # built once per forward, shared by every layer

    def is_plain_causal(self, q_len: int, k_len: int) -> bool:
        """True when SDPA's built-in causal mask means exactly this mask."""
        return self.causal and self.key_padding is None and self.q_start == 0 and q_len == k_len

    def is_empty(self, q_len: int, k_len: int) -> bool:
        """True when every query may see every key."""
        if self.key_padding is not None:
            return False
        return not self.causal or self.q_start + 1 >= k_len  # one query at the end sees all

    def dense(self, q_len: int, k_len: int, device) -> torch.Tensor | None:
        """The mask as bool (B or 1, 1, Tq, Tk), True = may attend; None when nothing is masked."""
        if self.is_empty(q_len, k_len):
            return None
        key = (q_len, k_len, str(device))
        if key not in self._dense:
            self._dense[key] = self._build(q_len, k_len, device)
        return self._dense[key]

    def _build(self, q_len: int, k_len: int, device) -> torch.Tensor:
        keep = torch.ones(1, 1, q_len, k_len, dtype=torch.bool, device=device)
        if self.causal:
            q_pos = torch.arange(self.q_start, self.q_start + q_len, device=device)[:, None]  # (Tq, 1)
            k_pos = torch.arange(k_len, device=device)[None, :]  # (1, Tk)
            keep = keep & (k_pos <= q_pos)
        if self.key_padding is not None:
            keep = keep & self.key_padding[:, None, None, :k_len].to(torch.bool)  # (B, 1, 1, Tk)
        return keep


def _float_mask(mask: Mask, bias: torch.Tensor | None, q_len: int, k_len: int, q: torch.Tensor):
    """Combine mask and bias into one additive float tensor (or None)."""
    keep = mask.dense(q_len, k_len, q.device)
    if keep is None:
        return None if bias is None else bias.to(q.dtype)
    add = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill(~keep, float("-inf"))
    return add if bias is None else add + bias.to(q.dtype)


class Eager(nn.Module):
    """The reference kernel: explicit scores, softmax and weighted sum. Returns the weights."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)

    def forward(self, q, k, v, mask: Mask, bias=None):
        scale = q.shape[-1] ** -0.5
        scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
        if bias is not None:
            scores = scores + bias
        keep = mask.dense(q.shape[2], k.shape[2], q.device)
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        upcast = scores.dtype in (torch.float16, torch.bfloat16)  # softmax in fp32 at low precision
        weights = torch.softmax(scores.float() if upcast else scores, dim=-1).to(q.dtype)
        if mask.key_padding is not None:
            weights = torch.nan_to_num(weights)  # rows with every key masked (padding queries) -> 0
        return self.drop(weights) @ v, weights  # (B, H, Tq, D), (B, H, Tq, Tk)


class SDPA(nn.Module):
    """PyTorch's fused scaled_dot_product_attention; flash or memory-efficient kernels on GPU.

    On CPU at bf16/fp16 with gradients, PyTorch's flash backward is far slower than plain matmuls
    (measured: 7x at T=64, head dim 32), so there this kernel takes the eager math path.
    """

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        self.math = Eager(dropout)

    def forward(self, q, k, v, mask: Mask, bias=None):
        if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and torch.is_grad_enabled():
            return self.math(q, k, v, mask, bias)[0], None
        q_len, k_len = q.shape[2], k.shape[2]
        p = self.dropout if self.training else 0.0
        if bias is None and mask.is_plain_causal(q_len, k_len):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True), None
        attn_mask = _float_mask(mask, bias, q_len, k_len, q)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        if mask.key_padding is not None:  # queries that see no key at all come out as NaN
            out = torch.nan_to_num(out)
        return out, None


KERNELS = {"eager": Eager, "sdpa": SDPA}
KERNEL_FIXED = ("dropout",)
# Kernels that can hand back attention weights (guided attention, copy and heatmaps need them).
GIVES_WEIGHTS = {"eager"}
