"""`tfmr checkpoint`: work on checkpoint folders.

    tfmr checkpoint consolidate RUN/checkpoint --out PLAIN [--weights-only]

`consolidate` turns a sharded checkpoint (written by `train.parallel=fsdp` under torchrun, one
shard per rank) into a plain one in one process: model.safetensors and, unless --weights-only,
the optimizer moments and training state, so `tfmr generate`, `eval`, `finetune` read it and
`tfmr train --resume` continues it on one process or under ddp. The work is
tfmr.parallel.consolidate.
"""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("checkpoint", help="work on checkpoints: consolidate a sharded (fsdp) checkpoint",
                       description="tfmr checkpoint consolidate RUN/checkpoint --out PLAIN")
    what = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = what.add_parser("consolidate", help="a sharded (fsdp) checkpoint -> a plain one",
                        description="Read a sharded checkpoint (any number of shards) in one process and write "
                                    "a plain checkpoint.")
    c.add_argument("source", help="the sharded checkpoint folder (RUN/checkpoint)")
    c.add_argument("--out", required=True, help="where to write the plain checkpoint")
    c.add_argument("--overwrite", action="store_true", help="replace the checkpoint already in --out")
    c.add_argument("--weights-only", action="store_true",
                   help="only the weights, config and tokenizer (default: also optimizer and training state)")
    c.set_defaults(func=consolidate)


def consolidate(args) -> int:
    import torch

    from ..builder import build_model
    from ..checkpoint import read_config
    from ..config import ModelConfig, TrainConfig, from_dict
    from ..folders import check_output
    from ..parallel import consolidate as run
    from ..loop import make_optimizer

    saved = read_config(args.source)
    out = check_output(args.out, "checkpoint", overwrite=args.overwrite, sources=[args.source])
    train = from_dict(TrainConfig, {k: v for k, v in saved.get("train", {}).items()
                                    if k in TrainConfig.__dataclass_fields__})
    optimizer = None if args.weights_only else (lambda m: make_optimizer(m, train, torch.device("cpu")))
    out = run(args.source, out, build=lambda m: build_model(from_dict(ModelConfig, m)), make_optimizer=optimizer)
    print(f"plain checkpoint: {out}")
    return 0
