"""What a training run says before its first step: a few lines, not the whole config.

    summary(trainer, data)        the run folder, the model's shape, the data (when given), the
                                  steps or time budget and the schedule, device / precision /
                                  threads, and where the full config is (RUN/checkpoint/config.json;
                                  `-v` prints it)
    machine_notes(train, device)  a line for each way this machine changes the run: cores busy
                                  with other work (how to set train.threads, and why tfmr leaves it
                                  as it is), bf16 by default on a CPU that has it (the weights then
                                  differ from an fp32 CPU's)
    busy(load, cores, threads)    whether other work holds cores that the run's threads need

`tfmr lm train` and `tfmr g2p train` (and every task's `train`) print these after every check has
passed, so a one-line error comes before them. The model's size follows, from the trainer's `fit`
("model: ... parameters on DEVICE").
"""

from __future__ import annotations

import os

import torch

from .devices import cpu_has_bf16, precision


def summary(trainer, data: str | None = None) -> list[str]:
    """The lines a run prints at start (TrainLoop's cfg, out, device and step are read)."""
    cfg, t = trainer.cfg, trainer.cfg.train
    state = f"resumed at step {trainer.step:,}" if trainer.step else "a new run"
    lines = [
        f"run: {trainer.out} ({state}); the full config is saved with each checkpoint "
        f"({trainer.out / 'checkpoint' / 'config.json'}), -v prints it here",
        f"shape: {shape(cfg.model)}",
    ]
    if data:
        lines.append(f"data: {data}")
    lines.append(f"training: {schedule(t)}")
    threads = torch.get_num_threads()
    lines.append(
        f"compute: {trainer.device}, {precision(trainer.device, t.dtype)} (train.dtype={t.dtype}), "
        f"{threads} thread{'s' if threads != 1 else ''}"
    )
    return lines + machine_notes(t, trainer.device, threads)


def shape(m) -> str:
    """A ModelConfig in a few words: family, layers x width, heads, context."""
    if m.arch == "encoder-decoder":
        layers = f"{m.encoder_layers or m.layers}+{m.layers} layers"
    else:
        layers = f"{m.layers} layers"
    return (
        f"{m.arch}, {layers} of width {m.dim}, {m.heads} heads, context {m.context}, "
        f"positions {m.pos.kind}, {m.ffn.kind} feed-forward"
    )


def schedule(t) -> str:
    """The train section's length and schedule in a few words."""
    tokens = getattr(t, "batch_tokens", 0)  # a pair task's cap (Seq2SeqTrainConfig)
    batch = f"up to {tokens:,} tokens" if tokens else f"{t.batch_size:,}"
    budget = f" (or {t.max_minutes:g} minutes, whichever comes first)" if t.max_minutes > 0 else ""
    return (
        f"{t.steps:,} steps of batches of {batch}{budget}, lr {t.lr:g} after {t.warmup:,} warmup "
        f"steps, down to {t.min_lr:g}; evaluation every {t.eval_every:,} steps, a checkpoint "
        f"every {t.checkpoint_every:,}"
    )


def machine_notes(
    t, device: torch.device, threads: int, load: float | None = None, cores: int | None = None
) -> list[str]:
    """One line for each way this machine changes the run (none on a quiet fp32 machine; no thread
    note for a run on one thread, which has nothing to give up). `load` and `cores` default to this
    machine's (1-minute load average, usable cores)."""
    notes = []
    if device.type != "cpu":
        return notes
    load = machine_load() if load is None else load
    cores = usable_cores() if cores is None else cores
    if threads > 1 and load is not None and busy(load, cores, threads):
        free = max(1, int(cores - load + 0.5))
        notes.append(
            f"note: the CPU is busy (load {load:.1f} on {cores} cores) and this run uses {threads} "
            f"threads, which then fight the other work and can make each step several times "
            f"slower; --set train.threads={free} (the cores free) helps. tfmr does not "
            f"change it for you: the thread count changes the order of the arithmetic, so a run "
            f"is bit-for-bit reproducible only at the same thread count"
        )
    if t.dtype == "auto" and cpu_has_bf16():
        notes.append(
            "note: this CPU multiplies bf16 natively, so train.dtype=auto trains in bf16 here and "
            "the weights differ from those an fp32 CPU trains from the same seed "
            "(--set train.dtype=float32 for those)"
        )
    return notes


def busy(load: float, cores: int, threads: int) -> bool:
    """Whether other work holds cores the run's `threads` need: the load average leaves fewer than
    `threads` cores free, by at least one whole core (this process's own start is below that)."""
    return load >= cores - threads + 1


def machine_load() -> float | None:
    """The 1-minute load average, or None where the system does not give one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def usable_cores() -> int:
    """The cores this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
