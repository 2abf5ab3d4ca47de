"""The learning-rate schedule: linear warmup, then cosine decay to `min_lr`, over `train.steps`
or, with `train.max_minutes`, over a wall-clock budget (whichever runs out first).

    lr_at(step, t)                     the learning rate at a schedule step
    progress(step, seconds, t)         how far the run is, in [0, 1]: by steps or by the budget
    schedule_step(step, seconds, t)    the step the schedule is at (the budget's share of the steps)
    finished(step, seconds, t)         whether the run has reached its end

The optimizer (AdamW) and the loop that asks these are loop.py.
"""

from __future__ import annotations

import math

from .config import TrainConfig


def lr_at(step: int, t: TrainConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr` at the last step."""
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup  # (never reached with warmup = 0)
    if step >= t.steps:
        return t.min_lr
    share = (step - t.warmup) / max(1, t.steps - t.warmup)
    return t.min_lr + 0.5 * (1.0 + math.cos(math.pi * share)) * (t.lr - t.min_lr)


def progress(step: int, seconds: float, t: TrainConfig) -> float:
    """How far the schedule is: by steps, or by the wall-clock budget if that is further."""
    frac = step / t.steps
    if t.max_minutes > 0:
        frac = max(frac, seconds / (60.0 * t.max_minutes))
    return min(frac, 1.0)


def schedule_step(step: int, seconds: float, t: TrainConfig) -> int:
    """The step the learning-rate schedule is at (under a time budget, the budget's share)."""
    return step if t.max_minutes <= 0 else round(progress(step, seconds, t) * t.steps)


def finished(step: int, seconds: float, t: TrainConfig) -> bool:
    """Whether the run has done its steps or spent its budget."""
    return step >= t.steps or progress(step, seconds, t) >= 1.0
