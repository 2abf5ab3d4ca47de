"""The copy task's config (CopyTaskConfig) and its presets, added to tfmr.presets' registries here.

    copytask, copytask-tiny     tfmr experiment copytask --preset NAME

The task itself (data, the two heads, accuracy, the command) is tfmr/tasks/copytask.py, which
imports torch; its config and presets live here, apart, so that `tfmr presets` lists them and a
command given a copy-task preset names it, without loading torch. Importing this module registers
them once (tfmr.presets.register), however the task is reached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .. import presets
from ..config import (
    Choice,
    DecodeConfig,
    ModelConfig,
    Seq2SeqConfig,
    Seq2SeqTrainConfig,
)

# the task's name, its title (the checkpoint kind in messages) and the command that runs it
NAME, TITLE, COMMAND = "copytask", "copy-task", "experiment copytask"


@dataclass
class CopyTaskConfig(Seq2SeqConfig):
    """The copy task's two models (plain head and pointer-generator) share this shape and budget."""

    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(
            arch="encoder-decoder",
            dim=64,
            layers=2,
            encoder_layers=2,
            heads=4,
            context=32,
            kernel=Choice("eager"),
            pos=Choice("learned"),
            share_embeddings=True,
            tie_embeddings=True,
        )
    )
    train: Seq2SeqTrainConfig = field(
        default_factory=lambda: Seq2SeqTrainConfig(
            steps=1500,
            batch_size=64,
            lr=2e-3,
            min_lr=1e-4,
            warmup=50,
            weight_decay=0.0,
            eval_every=250,
            log_every=20,
            checkpoint_every=10**9,
            eval_pairs=256,
            dtype="float32",
            threads=1,
        )
    )
    decode: DecodeConfig = field(default_factory=lambda: DecodeConfig(max_len=14))


def copytask() -> CopyTaskConfig:
    """Pointer-generator vs plain head, 1500 steps each (about a minute per head on one core); seed 0."""
    cfg = CopyTaskConfig()
    cfg.train.seed = 0  # also the data seed
    return cfg


def copytask_tiny() -> CopyTaskConfig:
    """Seconds-long copy-task runs for tests and smoke checks (the numbers mean nothing)."""
    cfg = copytask()
    cfg.model.dim, cfg.model.layers, cfg.model.encoder_layers, cfg.model.heads = 16, 1, 1, 2
    cfg.train.steps, cfg.train.warmup, cfg.train.eval_every, cfg.train.eval_pairs = 4, 1, 10**9, 16
    return cfg


# name -> (the command that uses it, the function), in the order `tfmr presets` lists them
PRESETS: dict[str, tuple[str, Callable]] = {
    "copytask": (COMMAND, copytask),
    "copytask-tiny": (COMMAND, copytask_tiny),
}

presets.register(CopyTaskConfig, TITLE, f"tfmr {COMMAND}", PRESETS)
