"""`tfmr train`: train a language model, then print samples from it.

    tfmr train [--preset default] [--config FILE] [--set key=value ...] [--data PATH] [--out DIR]
               [--resume | --overwrite]

The run (checkpoint, metrics.jsonl, loss.png) is written to --out; the work is tfmr.train.Trainer.
"""
from __future__ import annotations

from .common import config_flags, resolve_config
from .generate import stream_text


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a language model")
    config_flags(p)
    p.add_argument("--out", default="runs/train", help="run folder (checkpoint, metrics, plots)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..builder import validate
    from ..train import Trainer, describe

    cfg = resolve_config(args)
    validate(cfg.model)
    print(describe(cfg))
    trainer = Trainer(cfg, args.out, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    print(trainer.model)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        return 130
    print(f"checkpoint: {trainer.ckpt_dir}\nmetrics:    {args.out}/metrics.jsonl\nloss curve: {args.out}/loss.png")
    s = cfg.sample
    for i in range(s.num_samples):
        print(f"\n--- sample {i + 1} (temperature {s.temperature}, top-k {s.top_k}) ---")
        stream_text(trainer.model, trainer.data.tokenizer, s.prompt, s.max_new_tokens, s.temperature,
                    s.top_k, None, seed=cfg.train.seed + i)
    return 0
