"""`tfmr lm finetune`: fine-tune a checkpoint with LoRA or bottleneck adapters (only they train).

    tfmr lm finetune --checkpoint RUN/checkpoint --lora rank=8,alpha=16,targets=q_proj,v_proj \
                  --data new.txt --out RUN-lora [--set train.steps=300 ...] [--resume | --overwrite]

The base may be a decoder-only Hugging Face folder (config.json + safetensors + tokenizer.json);
the LoRA weights then record one sha256 over its weight files. The work is
tfmr/tasks/finetune.py; `tfmr lm generate --lora RUN-lora` uses the result.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a checkpoint with LoRA or adapters (only they train)"
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="the base: a checkpoint folder (RUN/checkpoint) or a decoder-only Hugging Face model folder",
    )
    method = p.add_mutually_exclusive_group(required=True)
    method.add_argument(
        "--lora", metavar="SPEC", help="e.g. rank=8,alpha=16,targets=q_proj,v_proj[,dropout=0.05]"
    )
    method.add_argument("--adapter", metavar="SPEC", help="e.g. bottleneck=32,targets=out_proj,w2")
    p.add_argument("--data", required=True, help="the text to fine-tune on (file or folder)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the base run, e.g. --set train.steps=200",
    )
    p.add_argument(
        "--out", default="runs/finetune", help="run folder (adaptation weights, metrics)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the fine-tuning run saved in --out"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an --out that holds a fine-tuning run",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..adapters import ADAPTATION_FILE
    from ..config import ConfigError
    from ..tasks.finetune import FinetuneTrainer, finetune_config, spec_options

    method, spec = ("lora", args.lora) if args.lora else ("adapter", args.adapter)
    cfg = finetune_config(args.checkpoint, args.data, args.set)
    if args.resume and args.overwrite:
        raise ConfigError(
            "--resume continues the run in --out and --overwrite starts it over: give one"
        )
    trainer = FinetuneTrainer(
        cfg,
        args.out,
        args.checkpoint,
        method,
        spec_options(spec),
        progress=not args.no_progress,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    try:
        trainer.fit()
    except KeyboardInterrupt:
        return 130
    print(
        f"{method} weights: {trainer.out / ADAPTATION_FILE}\nmetrics: {args.out}/metrics.jsonl\n"
        f"use: tfmr lm generate --checkpoint {args.checkpoint} --lora {args.out}"
    )
    return 0
