"""`tfmr checkpoint average`: average the weights of checkpoints of one run (checkpoint averaging).

    tfmr checkpoint average --out RUN/averaged CKPT CKPT ...
    tfmr checkpoint average --out RUN/averaged --last 5 RUN/snapshots   (runs keep snapshots: train.keep_last=N)

The work is tfmr.checkpoint.average.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "average",
        help="average the weights of checkpoints of one run (checkpoint averaging)",
        description="tfmr checkpoint average --out RUN/averaged CKPT CKPT ... | "
        "tfmr checkpoint average --out RUN/averaged --last 5 RUN/snapshots "
        "(runs keep snapshots with --set train.keep_last=N)",
    )
    p.add_argument(
        "checkpoints", nargs="+", help="checkpoint folders, or one folder of snapshots with --last"
    )
    p.add_argument(
        "--last", type=int, default=None, help="average the newest N snapshots of the folder given"
    )
    p.add_argument("--out", required=True, help="where to write the averaged checkpoint")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoint already in --out"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import checkpoint

    sources = [Path(p) for p in args.checkpoints]
    if args.last is not None:
        if args.last < 1:
            raise ConfigError(
                f"--last N takes the number of newest snapshots to average (N >= 1), got {args.last}"
            )
        if len(sources) != 1:
            raise ConfigError("--last N takes one folder of snapshots (RUN/snapshots)")
        if not sources[0].is_dir():
            raise ConfigError(
                f"{sources[0]} is not a folder of snapshots: a run keeps them with "
                "--set train.keep_last=N, one at each of its checkpoints (train.checkpoint_every)"
            )
        found = sorted(
            p for p in sources[0].iterdir() if p.is_dir() and not p.name.endswith((".tmp", ".old"))
        )
        if len(found) < args.last:
            raise ConfigError(
                f"{sources[0]} holds {len(found)} checkpoints; --last {args.last} asks for more"
            )
        sources = found[-args.last :]
    out = checkpoint.average(sources, args.out, overwrite=args.overwrite)
    print(f"averaged {len(sources)} checkpoints ({', '.join(p.name for p in sources)}) -> {out}")
    return 0
