"""Starting a run from a trained model's weights (`train.init`): the same shape, or a shallower one.

    tfmr g2p train --preset g2p-small --set train.init=runs/g2p/checkpoint --out runs/g2p-again

Every parameter of the new model is copied from the source model's parameter of the same name
and shape. A layer stack the model class declares (`layer_stacks`: the decoder's `blocks`, an
encoder-decoder's `encoder` too) may hold fewer layers than the source's; it then takes source
layers spread evenly over the stack, the first and the last kept (DistilBERT's choice of every
other teacher layer, generalised): 2 of 3 -> (0, 2), 1 of 3 -> (0,), 4 of 12 -> (0, 4, 7, 11).
Anything else that differs (a width, a vocabulary size, a parameter the source lacks, a deeper
stack than the source's) is one line naming the first such parameter (ConfigError), before any
weight is copied. Why: a shallow student started from its teacher's layers and trained on the
teacher's outputs gets near the teacher in a fraction of the teacher's training compute, and
decodes in a fraction of its time.

Left out: widths (a narrower model has no such parameter to copy), quantized sources (their
matrices are not plain weights), ensembles (no single set of weights).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ConfigError


def spread(n: int, source: int) -> list[int]:
    """The `source` layer each of `n` layers takes: evenly spread, first and last kept."""
    if not 1 <= n <= source:
        raise ValueError(f"{n} layers cannot take {source} source layers")
    if n == 1:
        return [0]
    return [round(i * (source - 1) / (n - 1)) for i in range(n)]


def layer_maps(model: nn.Module, source: nn.Module, origin: str) -> dict[str, list[int]]:
    """{stack name: the source layer of each of the model's layers} for each declared stack."""
    maps = {}
    for name in getattr(type(model), "layer_stacks", ()):
        n, m = len(getattr(model, name)), len(getattr(source, name))
        if n > m:
            raise ConfigError(
                f"train.init {origin}: it has {m} {name} layers, this model {n}; a model started "
                "from another takes as many layers or fewer"
            )
        maps[name] = spread(n, m)
    return maps


def source_name(key: str, maps: dict[str, list[int]]) -> str:
    """The source parameter `key` (e.g. "encoder.1.attn.q.weight") is copied from."""
    stack, _, rest = key.partition(".")
    if stack in maps:
        index, _, tail = rest.partition(".")
        return f"{stack}.{maps[stack][int(index)]}.{tail}"
    return key


def copy_weights(model: nn.Module, source: nn.Module, origin: str) -> str:
    """Fill `model`'s parameters and buffers from `source`'s (see the module docstring); return a
    short account of the layers taken, for the run's log."""
    quantized = getattr(source, "quantized", "fp32")
    if quantized != "fp32":
        raise ConfigError(
            f"train.init {origin}: its linear layers are {quantized}; start from the fp32 or fp16 "
            "model it was quantized from"
        )
    arch = getattr(source.cfg, "arch", None), getattr(model.cfg, "arch", None)
    if type(source) is not type(model) or arch[0] != arch[1]:
        raise ConfigError(
            f"train.init {origin}: a {type(source).__name__} ({arch[0]}) cannot start a "
            f"{type(model).__name__} ({arch[1]}); start from a model of the same kind"
        )
    maps = layer_maps(model, source, origin)
    theirs = source.state_dict()
    new = {}
    for key, mine in model.state_dict().items():
        name = source_name(key, maps)
        if name not in theirs or theirs[name].shape != mine.shape:
            found = "missing" if name not in theirs else f"shaped {tuple(theirs[name].shape)}"
            raise ConfigError(
                f"train.init {origin}: {name} is {found} there, this model's {key} is shaped "
                f"{tuple(mine.shape)}; start from a model of the same widths and vocabularies"
            )
        new[key] = theirs[name].to(mine.dtype)
    with torch.no_grad():
        model.load_state_dict(new)
    taken = [
        f"{name} layers {tuple(index)} of {len(getattr(source, name))}"
        for name, index in maps.items()
    ]
    return f"started from {origin}" + (f": {', '.join(taken)}" if taken else "")
