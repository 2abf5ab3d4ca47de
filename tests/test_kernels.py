"""Kernel parity: every fast kernel equals the eager reference, forward and gradients."""
from __future__ import annotations

import pytest
import torch

from tfmr.kernels import KERNELS, Eager, Mask


def _qkv(B=2, H=3, Tq=7, Tk=7, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g, dtype=torch.float64, requires_grad=True)
            for T in (Tq, Tk, Tk)]


MASKS = {
    "none": lambda B, Tq, Tk: Mask(causal=False),
    "causal": lambda B, Tq, Tk: Mask(causal=True),
    "causal-offset": lambda B, Tq, Tk: Mask(causal=True, q_start=Tk - Tq),
    "padding": lambda B, Tq, Tk: Mask(causal=False, key_padding=torch.arange(Tk)[None, :] < torch.tensor([[Tk], [Tk - 3]])),
    "causal+padding": lambda B, Tq, Tk: Mask(causal=True, key_padding=torch.arange(Tk)[None, :] >= torch.tensor([[0], [2]])),
}


@pytest.mark.parametrize("kind", sorted(KERNELS))
@pytest.mark.parametrize("mask_kind", sorted(MASKS))
@pytest.mark.parametrize("with_bias", [False, True])
def test_kernel_matches_eager(kind, mask_kind, with_bias):
    Tq = 3 if mask_kind == "causal-offset" else 7
    q, k, v = _qkv(Tq=Tq, Tk=7)
    bias = torch.randn(3, Tq, 7, dtype=torch.float64) if with_bias else None
    mask = MASKS[mask_kind](2, Tq, 7)
    ref_out, ref_w = Eager()(q, k, v, mask, bias)
    ref_grads = torch.autograd.grad(ref_out.sum(), (q, k, v))
    out, _ = KERNELS[kind]()(q, k, v, MASKS[mask_kind](2, Tq, 7), bias)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    torch.testing.assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def test_eager_causal_weights_are_lower_triangular():
    q, k, v = _qkv(Tq=5, Tk=5)
    _, w = Eager()(q, k, v, Mask(causal=True))
    assert torch.all(w[..., torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64))


def test_dense_mask_matches_definition():
    m = Mask(causal=True, q_start=2).dense(2, 4, "cpu")
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m[0, 0], expected)
