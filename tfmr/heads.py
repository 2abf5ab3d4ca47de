"""Output heads: hidden states -> a distribution over the vocabulary.

    linear      the plain head: one matrix (optionally with a bias, e.g. Marian's final_logits_bias),
                usually tied to the token embedding; softmax turns its logits into probabilities
    mlm         BERT's masked-LM head: dense -> activation -> LayerNorm -> tied matrix + bias

`HEADS` is read by the builder (`model.head=linear|mlm`); both keep the matrix at `lm_head.weight`
so tying and checkpoints see one name. The copy mechanism (pointer-generator) needs the source ids
and the attention weights, so it is not a head kind but a wrapper around a built encoder-decoder:
pointer.py, built with `build_copy_model(cfg)` in builder.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ffn import _activation
from .norms import LayerNorm
from .variant import Variant


class Head(Variant):
    """The output-head seam: `head(x (B, T, dim)) -> logits (B, T, vocab_size)`, with its output
    matrix at `weight` (vocab_size, dim), which the builder ties to the token embedding. Built
    from the model's dim and vocabulary size (`receives`); the rest of `__init__` is options."""

    receives = ("dim", "vocab_size")
    weight: torch.Tensor


class LinearHead(nn.Linear, Head):
    """logits = x W^T (+ b): the output layer of Vaswani et al. 2017 (https://arxiv.org/abs/1706.03762)."""

    def __init__(self, dim: int, vocab_size: int, bias: bool = False):
        super().__init__(dim, vocab_size, bias=bias)


class MLMHead(nn.Module, Head):
    """BERT's masked-LM head (https://arxiv.org/abs/1810.04805): a dense layer, an activation and a
    LayerNorm transform the hidden state before the (tied) output matrix, which has a bias."""

    quantizable = (
        False  # its matrix is a bare parameter, not a linear layer (and it decodes nothing)
    )

    def __init__(self, dim: int, vocab_size: int, activation: str = "gelu", eps: float = 1e-12):
        super().__init__()
        self.activation = activation
        self.dense = nn.Linear(dim, dim)
        self.act = _activation(activation)
        self.norm = LayerNorm(dim, bias=True, eps=eps)
        self.weight = nn.Parameter(
            torch.randn(vocab_size, dim) * 0.02
        )  # tied to tok_emb by the builder
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.act(self.dense(x))), self.weight, self.bias)  # (B, T, vocab)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


HEADS = {"linear": LinearHead, "mlm": MLMHead}
