"""`tfmr lm train`: train a language model, then print samples from it.

    tfmr lm train [--preset default] [--config FILE] [--set key=value ...] [--data PATH] [--out DIR]
               [--resume | --overwrite]

The run (checkpoint, metrics.jsonl, loss.png) is written to --out; the work is tfmr.train.Trainer.
Before the first step it prints a short summary (tfmr.runsummary: model, data, steps, device,
precision and threads, notes on a busy or bf16 CPU), every check having passed; -v prints the
whole resolved config and the model too (the config is saved with each checkpoint anyway).
Under torchrun (`torchrun --nproc_per_node N -m tfmr lm train --set train.parallel=ddp|fsdp`,
docs/distributed.md) only rank 0 prints; the others train silently.
With --resume the config is the one saved in OUT/checkpoint, then --config and --set (a longer
run: --set train.steps=N); a change to the saved model or data sections is refused, since the
saved weights and token ids are what the run continues.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..config import ConfigError, to_dict
from .common import config_flags, resolve_config
from .generate import stream_text


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a language model")
    config_flags(p)
    p.set_defaults(preset=None)  # None: the default preset, or with --resume the run's saved config
    p.add_argument("--out", default="runs/train", help="run folder (checkpoint, metrics, plots)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument(
        "--overwrite", action="store_true", help="start over in an --out that holds a run"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the whole resolved config and the model at start (default: a short summary)",
    )
    p.set_defaults(func=run)


def _same(section: str, key: str, saved, given) -> bool:
    if section == "data" and key == "path" and saved and given:  # one file, however it is spelled
        return os.path.realpath(saved) == os.path.realpath(given)
    return saved == given


def resolve_for_resume(args):
    """The saved run's config, then --config / --data / --set; refuse a change to the sections a
    resumed run keeps (TrainLoop.resume_keeps: model and data)."""
    from ..presets import read_run_config
    from ..train import Trainer

    ckpt = Path(args.out) / "checkpoint"
    if not ckpt.is_dir():
        raise ConfigError(f"nothing to resume: {ckpt} does not exist")
    saved = read_run_config(ckpt)
    cfg = resolve_config(args, saved=ckpt)
    for section in Trainer.resume_keeps:
        before, after = to_dict(getattr(saved, section)), to_dict(getattr(cfg, section))
        for key in after:
            if not _same(section, key, before[key], after[key]):
                raise ConfigError(
                    f"--resume continues the run saved in {args.out} with its {section} section as "
                    f"saved, but this command changes {section}.{key} ({before[key]!r} -> "
                    f"{after[key]!r}); start a new run for that (another --out, or --overwrite)"
                )
    if args.preset is not None:
        print(
            f"note: --resume continues the config saved in {ckpt}; --preset {args.preset} is not read",
            file=sys.stderr,
        )
    return cfg


def check_sample(cfg) -> None:
    """The end-of-run sample's settings, checked before training rather than after it."""
    from ..decode import check_decoding

    s = cfg.sample
    if s.num_samples < 0:
        raise ConfigError(f"sample.num_samples must be 0 (none) or more, got {s.num_samples}")
    try:
        check_decoding(s.max_new_tokens, s.temperature, s.top_k, name=lambda arg: f"sample.{arg}")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def sample_problem(tokenizer, prompt: str) -> str | None:
    """Why `prompt` cannot start a sample with this tokenizer (None: it can)."""
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as e:
        return f"sample.prompt {prompt!r} cannot be encoded: {e}"
    return None if ids else "sample.prompt is empty"


def print_start(trainer, verbose: bool) -> None:
    """What the run says before its first step, every check passed: a short summary
    (tfmr.runsummary), or with -v the whole resolved config and the model first."""
    from ..runsummary import summary
    from ..train import describe

    if verbose:
        print(describe(trainer.cfg))
        print(trainer.model)
    data = trainer.cfg.data
    tokenizer = trainer.data.tokenizer
    source = data.path or "the embedded corpus (Python's reference documentation)"
    print(
        "\n".join(
            summary(
                trainer,
                f"{source}, {data.tokenizer.kind} tokenizer ({tokenizer.vocab_size:,} tokens)",
            )
        )
    )


def run(args) -> int:
    from ..builder import validate
    from ..train import Trainer

    cfg = resolve_for_resume(args) if args.resume else resolve_config(args)
    validate(cfg.model)
    check_sample(cfg)
    trainer = Trainer(
        cfg, args.out, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite
    )
    if not trainer.parallel.is_main:
        trainer.fit()
        return 0
    s = cfg.sample
    problem = sample_problem(trainer.data.tokenizer, s.prompt) if s.num_samples else None
    if problem:
        print(
            f"note: {problem}; no samples will be printed at the end (set sample.prompt)",
            file=sys.stderr,
        )
    print_start(trainer, args.verbose)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        return 130
    print(
        f"checkpoint: {trainer.ckpt_dir}\nmetrics:    {args.out}/metrics.jsonl\nloss curve: {args.out}/loss.png"
    )
    if trainer.parallel.shards_checkpoints and s.num_samples:
        problem = (
            f"the model is sharded across processes; make a plain checkpoint with "
            f"tfmr checkpoint consolidate {trainer.ckpt_dir} --out PLAIN"
        )
        print(f"\nno sample: {problem}; then tfmr lm generate --checkpoint PLAIN --prompt TEXT")
        return 0
    if problem:
        print(
            f"\nno sample: {problem}; try: tfmr lm generate --checkpoint {trainer.ckpt_dir} --prompt TEXT"
        )
        return 0
    for i in range(s.num_samples):
        print(f"\n--- sample {i + 1} (temperature {s.temperature}, top-k {s.top_k}) ---")
        stream_text(
            trainer.model,
            trainer.data.tokenizer,
            s.prompt,
            s.max_new_tokens,
            s.temperature,
            s.top_k,
            None,
            seed=cfg.train.seed + i,
        )
    return 0
