"""A training process for tests/test_distributed.py, started by torchrun (not a test module).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py CONFIG.json OUT
        [--resume] [--die-rank R --die-at STEP] [--audit]

CONFIG.json holds a RunConfig as plain data. --die-rank/--die-at make one rank exit at once before
that step (a crashed rank). --audit makes every rank but 0 fail on any attempt to write, create,
rename or remove a file under OUT (Python's audit hooks see every open for writing), so a run
that finishes proves only rank 0 wrote there.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from tfmr.config import RunConfig, from_dict
from tfmr.train import Trainer

WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def forbid_writes_under(root: Path) -> None:
    root = str(root.resolve())

    def inside(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(root)
        except TypeError:  # a file descriptor
            return False

    def hook(event, args):
        if event == "open" and args[0] is not None and inside(args[0]):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & WRITES):
                raise RuntimeError(f"rank {os.environ['RANK']} wrote {args[0]}")
        elif event in (
            "os.mkdir",
            "os.rename",
            "os.replace",
            "os.remove",
            "os.rmdir",
            "shutil.rmtree",
        ) and inside(args[0]):
            raise RuntimeError(f"rank {os.environ['RANK']} changed {args[0]} ({event})")

    sys.addaudithook(hook)


class Dying(Trainer):
    die_rank, die_at = -1, -1

    def train_step(self) -> float:
        if self.parallel.rank == self.die_rank and self.step + 1 == self.die_at:
            print(f"rank {self.parallel.rank}: dying before step {self.die_at}", flush=True)
            os._exit(3)
        return super().train_step()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--die-rank", type=int, default=-1)
    ap.add_argument("--die-at", type=int, default=-1)
    ap.add_argument("--audit", action="store_true")
    args = ap.parse_args()
    cfg = from_dict(RunConfig, json.loads(Path(args.config).read_text()))
    if args.audit and int(os.environ.get("RANK", 0)) > 0:
        forbid_writes_under(Path(args.out))
    Dying.die_rank, Dying.die_at = args.die_rank, args.die_at
    Dying(cfg, args.out, resume=args.resume, progress=False).fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
