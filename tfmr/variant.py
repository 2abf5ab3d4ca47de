"""What a variant receives from the build: one `BuildContext`, through one constructor hook.

Every class on an axis of variation (positions, kernels, patterns, mixers, feed-forwards, norms,
residual placements, heads) is built the same way by builder.py:

    cls.from_config(ctx, **choice.options)

`ctx` is the model's shape and the stack being built (`BuildContext`); `choice.options` are the
user's options (`--set model.pos.base=500000`). A class says which of its constructor arguments
come from the build in `receives` (declared on the class, inherited by its subclasses); the
default `from_config` passes those fields of `ctx` by name, and everything else in the
constructor is a user option (config.check_options lists them in its errors). A class that needs
more than fields (attention builds its kernel) writes its own `from_config`.

    class LogDistance(Position):
        receives = ("heads",)                     # from the build; no user options
        def __init__(self, heads: int): ...

Not here: the registries (one dict at the bottom of each variant's module) and their reader
(builder.py); the seams themselves (the base classes beside their variants).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BuildContext:
    """The model's shape and the stack a variant is built for, from `ModelConfig` (builder.py).

    role: which stack the block belongs to ("decoder-only" or "encoder-only" model, or the
    "encoder" / "decoder" of an encoder-decoder: model.deepnorm_constants); layers: the
    (decoder) stack's depth; encoder_layers: the encoder's depth (= layers outside an
    encoder-decoder).
    new_kernel: a fresh self-attention kernel (`model.kernel`) for each call; None where the
    context builds no attention (tests of other axes).
    new_pos_part: a fresh per-layer part of the position scheme (`Position.layer_part`: the
    module or None) for each self-attention layer; None where there is none to make
    (cross-attention, tests of other axes)."""

    dim: int
    heads: int
    kv_heads: int
    context: int
    vocab_size: int
    bias: bool = True
    dropout: float = 0.0
    layers: int = 1
    encoder_layers: int = 1
    role: str = "decoder-only"
    new_kernel: Callable[[], Any] | None = None
    new_pos_part: Callable[[], Any] | None = None

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


class Variant:
    """The uniform constructor hook of every registry entry.

    receives: the constructor arguments the build supplies, each a `BuildContext` field of that
    name; the rest of the constructor's arguments are user options."""

    receives: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, ctx: BuildContext, **options):
        """An instance for the model described by `ctx`, with the user's `options`."""
        return cls(**{name: getattr(ctx, name) for name in cls.receives}, **options)
