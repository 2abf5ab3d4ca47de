"""`tfmr checkpoint VERB`: work on checkpoint folders.

    tfmr checkpoint average --out RUN/averaged CKPT CKPT ... | --last 5 RUN/snapshots  (cli/average.py)
    tfmr checkpoint consolidate RUN/checkpoint --out PLAIN [--weights-only]           (here)
    tfmr checkpoint import hf --checkpoint HF-DIR --out CKPT                          (cli/convert.py)
    tfmr checkpoint export hf|onnx --checkpoint CKPT --out DIR                        (cli/export.py)
    tfmr checkpoint quantize --checkpoint CKPT --to int8|bf16 --out DIR               (cli/quantize.py)

`import hf` and `export hf` mirror each other: --checkpoint is what is read, --out what is
written. `consolidate` turns a sharded checkpoint (written by `train.parallel=fsdp` under
torchrun, one shard per rank) into a plain one in one process: model.safetensors and, unless
--weights-only, the optimizer moments and training state, so `tfmr lm generate`, `lm eval`,
`lm finetune` read it and `tfmr lm train --resume` continues it on one process or under ddp.
The work is tfmr.parallel.consolidate.
"""

from __future__ import annotations

from . import average, convert, export, quantize


def add_parser(sub) -> None:
    p = sub.add_parser(
        "checkpoint",
        help="checkpoints: average | consolidate | import | export | quantize",
        description="Work on checkpoint folders: tfmr checkpoint VERB [flags]; "
        "tfmr checkpoint VERB --help gives its flags.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    average.add_parser(verbs)
    c = verbs.add_parser(
        "consolidate",
        help="a sharded (fsdp) checkpoint -> a plain one",
        description="Read a sharded checkpoint (any number of shards) in one process and write "
        "a plain checkpoint.",
    )
    c.add_argument("source", help="the sharded checkpoint folder (RUN/checkpoint)")
    c.add_argument("--out", required=True, help="where to write the plain checkpoint")
    c.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoint already in --out"
    )
    c.add_argument(
        "--weights-only",
        action="store_true",
        help="only the weights, config and tokenizer (default: also optimizer and training state)",
    )
    c.set_defaults(func=consolidate)
    convert.add_parser(verbs)
    export.add_parser(verbs)
    quantize.add_parser(verbs)


def consolidate(args) -> int:
    import torch

    from ..builder import build_model
    from ..checkpoint import read_config
    from ..config import ModelConfig, TrainConfig, from_dict
    from ..folders import check_output
    from ..loop import make_optimizer
    from ..parallel import consolidate as run

    saved = read_config(args.source)
    out = check_output(args.out, "checkpoint", overwrite=args.overwrite, sources=[args.source])
    train = from_dict(
        TrainConfig,
        {k: v for k, v in saved.get("train", {}).items() if k in TrainConfig.__dataclass_fields__},
    )
    optimizer = (
        None if args.weights_only else (lambda m: make_optimizer(m, train, torch.device("cpu")))
    )
    out = run(
        args.source,
        out,
        build=lambda m: build_model(from_dict(ModelConfig, m)),
        make_optimizer=optimizer,
    )
    print(f"plain checkpoint: {out}")
    return 0
