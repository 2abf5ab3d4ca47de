"""Experiments: runs that answer a research question and write a table and a plot.

Each module here exposes `add_arguments(parser)` and `main(args) -> int`, and is listed in
`MODULES` (`EXPERIMENTS` holds them imported); `tfmr experiment NAME` runs it. Experiments build
on the library (builder, Trainer, data) and add no model code of their own. Each takes the common
--preset / --config / --set / --data flags, starting from its preset `exp-NAME` (tfmr/presets.py),
and varies its one axis on top of the resolved config; its own flags are only the axis (which
variants) and --out.

    length-extrapolation   train at context L with each position scheme, test at L ... 16L
    norm-depth             Post-LN, Pre-LN and DeepNorm on a deep thin stack at one learning rate
    moe                    mixture of experts vs dense at equal active parameters
    long-context           loss by position out to 16L: full, sliding, sinks, Transformer-XL, retention
    streaming              generating 20,000 tokens: decoding memory and tokens/s along the way
    mixers                 Transformer vs retention vs hybrid at equal parameters and training time
    g2p-sampling           teacher forcing vs three kinds of scheduled sampling (test WER, long words)
    g2p-guided             steps until the cross-attention is diagonal, with and without guided attention
    g2p-alignment          plain vs each alignment kernel of cross-attention (WER, time per word)
    g2p-rl                 a G2P model's test WER / PER before and after SCST and MRT fine-tuning
    g2p-scaling            G2P WER against training compute: the compute-optimal shape, a fitted curve
    copytask               pointer-generator vs the plain softmax head where copying matters (the task
                           is tfmr/tasks/copytask.py; its presets are `copytask` and `copytask-tiny`)

The G2P experiments share tfmr/experiments/g2p_common.py and write OUT/table.md, OUT/results.json
and OUT/NAME.png.
"""

from __future__ import annotations

import importlib

# name -> its module. `tfmr experiment NAME` imports NAME's module only (tfmr.programs.lazy_commands
# reads the help lines from the files), so `tfmr --help` loads no torch; EXPERIMENTS (name ->
# module, every one imported) is made on first use.
MODULES = {
    "length-extrapolation": "tfmr.experiments.length_extrapolation",
    "norm-depth": "tfmr.experiments.norm_depth",
    "moe": "tfmr.experiments.moe",
    "long-context": "tfmr.experiments.long_context",
    "streaming": "tfmr.experiments.streaming",
    "mixers": "tfmr.experiments.mixer_race",
    "g2p-sampling": "tfmr.experiments.g2p_sampling",
    "g2p-guided": "tfmr.experiments.g2p_guided",
    "g2p-alignment": "tfmr.experiments.g2p_alignment",
    "g2p-rl": "tfmr.experiments.g2p_rl",
    "g2p-scaling": "tfmr.experiments.g2p_scaling",
    "copytask": "tfmr.tasks.copytask",
}


def __getattr__(name: str):
    """EXPERIMENTS: name -> module, each imported (and kept) on first use."""
    if name != "EXPERIMENTS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    experiments = {key: importlib.import_module(dotted) for key, dotted in MODULES.items()}
    globals()["EXPERIMENTS"] = experiments
    return experiments
