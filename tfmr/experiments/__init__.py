"""Experiments: runs that answer a research question and write a table and a plot.

Each module here exposes `add_arguments(parser)` and `main(args) -> int`, and is listed in
`EXPERIMENTS`; `tfmr experiment NAME` runs it. Experiments build on the library (builder,
Trainer, data) and add no model code of their own. Each takes the common --preset / --config /
--set / --data flags, starting from its preset `exp-NAME` (tfmr/presets.py), and varies its one
axis on top of the resolved config; its own flags are only the axis (which variants) and --out.

    length-extrapolation   train at context L with each position scheme, test at L ... 16L
    norm-depth             Post-LN, Pre-LN and DeepNorm on a deep thin stack at one learning rate
    moe                    mixture of experts vs dense at equal active parameters
    long-context           loss by position out to 16L: full, sliding, sinks, Transformer-XL, retention
    streaming              generating 20,000 tokens: decoding memory and tokens/s along the way
    mixers                 Transformer vs retention vs hybrid at equal parameters and training time
"""
from __future__ import annotations

from . import length_extrapolation, long_context, mixer_race, moe, norm_depth, streaming

EXPERIMENTS = {"length-extrapolation": length_extrapolation, "norm-depth": norm_depth, "moe": moe,
               "long-context": long_context, "streaming": streaming, "mixers": mixer_race}
