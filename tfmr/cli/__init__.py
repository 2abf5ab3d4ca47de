"""The `tfmr` command: one module per command group, put together here.

    train, generate, finetune, eval, bench, average, checkpoint, convert, export, quantize, presets, viz,
    explore, experiment, tokenizer, g2p, serve, copytask

Each module in this folder has `add_parser(subparsers)`, which adds its command and sets
`func`; `build_parser` calls them in the order of `COMMANDS`, `main` parses and runs.
Common flags (cli/common.py): --preset NAME, --config FILE (YAML/TOML), --set key=value
(repeatable), --data PATH, plus --out DIR and --resume where a command writes a run. User
mistakes (a bad key, a missing file, a tampered checkpoint) print one line, `tfmr: error: ...`,
and exit with code 2; no traceback. Output piped into a reader that stops early (`| head`) ends
the command quietly with exit code 0. The commands hold argument parsing and printing only; the
work is done by the library (tfmr/*.py), the tasks (tfmr/tasks/), the benchmarks (tfmr/bench/)
and the experiments (tfmr/experiments/).
"""
from __future__ import annotations

import argparse
import sys

from . import (average, bench, checkpoint, convert, copytask, experiment, explore, export, finetune, g2p, generate,
               presets, quantize, serve, tokenizer, train, viz)
from . import eval as eval_
from .common import USER_ERRORS, config_flags, guarded, load_model, resolve_config  # noqa: F401 (public)

COMMANDS = (train, generate, finetune, eval_, bench, average, checkpoint, convert, export, quantize, presets, viz,
            explore, experiment, tokenizer, g2p, serve, copytask)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfmr", description="Transformers, every concept, real and fast.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # A command that sets `intermixed=DEST` takes positionals after its options too (`tfmr g2p
    # hello --model-only world`): argparse leaves those over, and they join DEST in order.
    dest = getattr(args, "intermixed", None)
    if dest and extra and not any(e.startswith("-") and e != "-" for e in extra):
        setattr(args, dest, list(getattr(args, dest)) + extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return guarded(args.func, args)
    except BrokenPipeError:  # `tfmr generate ... | head`: the reader has gone; stop quietly
        quiet_stdout()
        return 0
    except KeyboardInterrupt:  # Ctrl-C: what was saved has been said (e.g. "continue with --resume")
        print("tfmr: interrupted", file=sys.stderr)
        return 130


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush at exit does not fail (and
    print "Exception ignored ... BrokenPipeError") on a pipe whose reader has gone."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (captured in-process)
        pass
