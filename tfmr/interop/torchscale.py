"""torchscale's RetNet retention layer (microsoft/torchscale, `MultiScaleRetention`) into tfmr's
`Retention`: the same weights, the same outputs in the parallel, recurrent and chunkwise forms.

    retention = Retention(dim, heads, bias=False, value_factor=value_dim / dim, eps=1e-6,
                          norm="rms", affine=False, rows="torchscale")          # torchscale today
    load_retention(retention, torchscale_layer.state_dict())
    pos = Rope(head_dim, context, base=theta_base(head_dim))                    # its Theta

The state dict's names are torchscale's (`q_proj`, `k_proj`, `v_proj`, `g_proj`, `out_proj`,
with biases in the July 2023 code, without them since September 2023; `group_norm` has no
parameters in either: elementwise_affine=False). What changes on the way in:

    q_proj, k_proj rows    torchscale rotates neighbouring dimensions (2i, 2i + 1) of each head
                           (`rotate_every_two`); tfmr's RoPE pairs i with i + head_dim / 2
                           (`rotate_half`). The rows are permuted per head, which leaves every
                           q . k unchanged and makes one rotation the other.
    Theta's frequencies    torchscale turns pair i by 10000^(-i / (n - 1)), n = head_dim / 2
                           (`torch.linspace(0, 1, n)`); RoPE by base^(-i / n). `theta_base`
                           gives the base that makes them equal, 10000^(n / (n - 1)).
    the head norm          tfmr's norm with `affine` gets scale 1 (and shift 0): torchscale's has none.

Not here: a whole RetNet model (embeddings scaled by sqrt(dim), torchscale's FFN and layer norms),
multiway layers.
"""

from __future__ import annotations

import torch
from torch import nn

from ..mixers import Retention

REQUIRED = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "g_proj.weight", "out_proj.weight")
BIASES = ("q_proj.bias", "k_proj.bias", "v_proj.bias", "g_proj.bias", "out_proj.bias")


def theta_base(head_dim: int) -> float:
    """The RoPE base whose frequencies are torchscale's 10000^(-linspace(0, 1, head_dim / 2))."""
    n = head_dim // 2
    return 10000.0 if n < 2 else 10000.0 ** (n / (n - 1))


def halves_from_pairs(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows (heads * D, ...) ordered as neighbour pairs (2i, 2i + 1) per head -> ordered as halves
    (i, i + D/2) per head: row h*D + i takes h*D + 2i, row h*D + D/2 + i takes h*D + 2i + 1."""
    rest = t.shape[1:]
    D = t.shape[0] // heads
    return t.reshape(heads, D // 2, 2, *rest).transpose(1, 2).reshape(heads * D, *rest)


@torch.no_grad()
def load_retention(retention: Retention, state: dict[str, torch.Tensor]) -> Retention:
    """Copy a torchscale `MultiScaleRetention` state dict into `retention` (in place; returned).
    Refuses missing or misshapen weights and biases the layer has no place for."""
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise ValueError(f"not a torchscale retention state dict: missing {', '.join(missing)}")
    has_bias = [key in state for key in BIASES]
    if any(has_bias) and retention.q_proj.bias is None:
        raise ValueError(
            "the state dict has biases (torchscale before September 2023); build the Retention with bias=True"
        )
    H = retention.heads
    for name in ("q_proj", "k_proj", "v_proj", "g_proj", "out_proj"):
        proj: nn.Linear = getattr(retention, name)
        weight, bias = state[f"{name}.weight"], state.get(f"{name}.bias")
        if weight.shape != proj.weight.shape:
            raise ValueError(
                f"{name}.weight is {tuple(weight.shape)}; this Retention's is {tuple(proj.weight.shape)} "
                f"(dim, heads and value_factor must match torchscale's embed_dim, heads and value_dim)"
            )
        if name in ("q_proj", "k_proj"):  # its Theta pairs neighbours, tfmr's RoPE halves
            weight = halves_from_pairs(weight, H)
            bias = None if bias is None else halves_from_pairs(bias, H)
        proj.weight.copy_(weight)
        if proj.bias is not None:
            proj.bias.copy_(bias if bias is not None else torch.zeros_like(proj.bias))
    for name, value in (
        ("weight", 1.0),
        ("bias", 0.0),
    ):  # torchscale's head norm has no affine parameters
        p = getattr(retention.norm, name, None)
        if p is not None:
            p.copy_(state.get(f"group_norm.{name}", torch.full_like(p, value)))
    return retention
