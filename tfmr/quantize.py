"""Weight-only quantization for decoding: every linear layer's matrix stored in fewer bytes.

A decode step at batch 1 reads every weight once to produce one token, so on a CPU (and for the
output matrix of a large vocabulary above all) the step is bound by bytes, not arithmetic. Here
each `nn.Linear` of a built model, the (tied) output head included, is swapped for a module that
holds its matrix in a smaller type; activations, norms, embeddings, biases and the KV cache stay
as they were:

    fp32   nothing changes (the reference)
    bf16   the matrix in bfloat16 (2 bytes a weight); the input is cast to bf16 for the matmul
    int8   the matrix in int8 (1 byte a weight) with one symmetric scale per output channel
           (bf16, the kernel's type): W ~ q * s[:, None], q = round(W / s) in [-127, 127],
           s = max|W[i]| / 127 rounded to bf16;
           the kernel is aten._weight_int8pack_mm (int8 weights, bf16 activations and scales),
           the fastest weight-only kernel of torch 2.13 on CPU (docs/decoding.md, "weight-only
           quantization": dequantize-then-matmul and torch.compile's fusion read more bytes)

    quantize_(model, "int8")      swap in quantized modules computed from the model's weights
    prepare_(model, "int8")       swap in empty quantized modules (a quantized checkpoint loads next)
    check_quantizable(model, w)   the one-line refusal (ConfigError) for what cannot be quantized

The tied output head gets its own quantized matrix; the embedding keeps its fp32 table (a step
reads one row of it). A module whose forward reads its linear layers' `.weight` itself (the MoE
router, retention's state) declares `quantizable = False` and a model holding one is refused,
as is an encoder (it does not decode). A quantized checkpoint records `decode.weights` in its
config; loading builds the model, calls `prepare_` and reads the int8 matrices and scales
(`tfmr checkpoint quantize`, cli/quantize.py). Each kind declares `onnx`, the ONNX operator that
turns its stored matrix back into floats (int8: DequantizeLinear with per-axis scales; bf16: Cast),
which the ONNX exporter reads (interop/onnx_export.py). Not here: int4 (docs/decoding.md says
why), activation quantization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError


class WeightOnlyLinear(nn.Module):
    """y = x W^T + b with W held in a smaller type (subclasses); the bias stays in float and is
    added in the input's dtype. Subclasses declare `weights` (the name in WEIGHTS), `bytes_per_weight`
    and `kernel` (what computes x W^T), and `onnx` (the ONNX operator that makes floats of the stored
    matrix; empty: not exportable), and define `matmul` and `set_weight`."""

    weights = ""
    bytes_per_weight = 4
    kernel = ""
    onnx = ""

    def __init__(self, in_features: int, out_features: int, bias: bool, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = (
            nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False)
            if bias
            else None
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> WeightOnlyLinear:
        module = cls(
            linear.in_features, linear.out_features, linear.bias is not None, linear.weight.device
        )
        module.set_weight(linear.weight.detach().float())
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = self.matmul(x.reshape(-1, self.in_features)).to(x.dtype)  # (N, out)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*shape[:-1], self.out_features)  # (..., out)

    def weight_bytes(self) -> int:
        """Bytes one forward reads for the matrix (and its scales)."""
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, weights={self.weights}, kernel={self.kernel}"
        )


class Bf16Linear(WeightOnlyLinear):
    """The matrix in bfloat16; x is cast to bf16 for a bf16 x bf16 matmul (fp32 accumulation)."""

    weights, bytes_per_weight, kernel = "bf16", 2, "aten.linear (bf16)"
    onnx = "Cast"

    def __init__(self, in_features: int, out_features: int, bias: bool, device=None):
        super().__init__(in_features, out_features, bias, device)
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.bfloat16, device=device)
        )

    def set_weight(self, w: torch.Tensor) -> None:
        self.weight.copy_(w.to(torch.bfloat16))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight)  # (N, out)


class Int8Linear(WeightOnlyLinear):
    """The matrix in int8 with a per-output-channel symmetric scale, stored beside it in bf16: the
    type the kernel takes, held as a buffer so that torch.compile's lowering of the kernel sees a
    stored tensor, not a cast."""

    weights, bytes_per_weight, kernel = "int8", 1, "aten._weight_int8pack_mm (bf16 activations)"
    onnx = "DequantizeLinear"

    def __init__(self, in_features: int, out_features: int, bias: bool, device=None):
        super().__init__(in_features, out_features, bias, device)
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.bfloat16, device=device))

    def set_weight(self, w: torch.Tensor) -> None:
        q, s = quantize_int8(w)
        self.weight.copy_(q)
        self.scale.copy_(s)

    def dequantized(self) -> torch.Tensor:
        """The matrix this module multiplies by, in fp32 (out, in)."""
        return self.weight.float() * self.scale.float()[:, None]

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(
            x.to(torch.bfloat16), self.weight, self.scale
        )  # (N, out)


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (out, in), s bf16 (out,)) with w ~ q * s[:, None]: symmetric, per output channel;
    q is rounded against the bf16 scale the kernel multiplies by."""
    s = (w.abs().amax(dim=1).clamp(min=1e-12) / 127).to(torch.bfloat16)  # (out,)
    q = torch.round(w / s.float()[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in)
    return q, s


WEIGHTS = {"fp32": None, "bf16": Bf16Linear, "int8": Int8Linear}


def check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise ConfigError(f"unknown decode.weights {weights!r}; valid: {', '.join(WEIGHTS)}")


def check_quantizable(model: nn.Module, weights: str) -> None:
    """Refuse, in one line (ConfigError), a model these weights cannot replace the layers of."""
    check_weights(weights)
    if weights == "fp32":
        return
    if not getattr(model, "causal", True) and not getattr(model, "needs_source", False):
        raise ConfigError(
            f"decode.weights={weights} quantizes a model for decoding; this one is an encoder "
            "(it does not decode): use decode.weights=fp32"
        )
    for name, module in model.named_modules():
        if not getattr(type(module), "quantizable", True):
            raise ConfigError(
                f"decode.weights={weights}: {name} ({type(module).__name__}) reads its weight matrices "
                "itself and cannot be quantized; use decode.weights=fp32"
            )


def _linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, child) for every nn.Linear and quantized linear of `model`."""
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, (nn.Linear, WeightOnlyLinear))
    ]


def quantize_(model: nn.Module, weights: str) -> nn.Module:
    """Replace every nn.Linear of `model` (in place) by its `weights` version computed from its
    own fp32 matrix; returns the model. fp32 changes nothing. Refuses what check_quantizable does."""
    check_quantizable(model, weights)
    cls = WEIGHTS[weights]
    if cls is not None:
        for parent, name, child in _linears(model):
            if isinstance(child, WeightOnlyLinear):
                raise ConfigError(
                    f"{name} is already quantized ({child.weights}); quantize an fp32 model"
                )
            setattr(parent, name, cls.from_linear(child))
    model.quantized = weights
    return model


def prepare_(model: nn.Module, weights: str) -> nn.Module:
    """Replace every nn.Linear by an empty `weights` module of the same shape, so that a quantized
    checkpoint's weights load into it (checkpoint.load_weights)."""
    check_quantizable(model, weights)
    cls = WEIGHTS[weights]
    if cls is not None:
        for parent, name, child in _linears(model):
            setattr(
                parent,
                name,
                cls(
                    child.in_features,
                    child.out_features,
                    child.bias is not None,
                    child.weight.device,
                ),
            )
    model.quantized = weights
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the quantized matrices (and scales) of `model`: what its linear layers read per step."""
    return sum(m.weight_bytes() for m in model.modules() if isinstance(m, WeightOnlyLinear))


def saved_weights(cfg) -> str:
    """The weights a checkpoint's config records (`decode.weights`; fp32 when it has none)."""
    decode = getattr(cfg, "decode", None)
    return getattr(decode, "weights", "fp32")


def convert_(model: nn.Module, stored: str, wanted: str) -> nn.Module:
    """A model loaded with `stored` weights, made to decode with `wanted` ones: an fp32 model is
    quantized; a quantized one decodes only as what it holds (its fp32 matrices are gone)."""
    check_weights(wanted)
    if wanted == stored:
        return model
    if stored != "fp32":
        raise ConfigError(
            f"this checkpoint holds {stored} weights (tfmr checkpoint quantize): it decodes with "
            f"decode.weights={stored} only, not {wanted}"
        )
    return quantize_(model, wanted)


@torch.no_grad()
def argmax_agreement(
    reference: nn.Module, model: nn.Module, ids: torch.Tensor, prompt_len: int
) -> float:
    """The share of positions of `ids` (B, T) past the prompt where `model`'s arg-max next token is
    the reference's, both reading the same sequence (teacher-forced: a divergence early does not
    count against every later position, as comparing two free-running greedy outputs would)."""
    ref = reference(ids[:, :-1]).logits[:, prompt_len - 1 :].argmax(-1)  # (B, T - prompt_len)
    got = model(ids[:, :-1]).logits[:, prompt_len - 1 :].argmax(-1)
    return (ref == got).float().mean().item()
