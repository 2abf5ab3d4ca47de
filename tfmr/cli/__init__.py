"""The `tfmr` command: `tfmr NOUN VERB [flags]`, one module per noun or verb, put together here.

    lm          train | generate | eval decoding | finetune        language models
    g2p         pronounce (the default: tfmr g2p WORD ...) | train | eval | export | finetune | serve
    checkpoint  average | consolidate | import hf | export hf|onnx | quantize
    tokenizer   train | encode | decode | show
    bench NAME, experiment NAME, viz positions|attention, explore, presets

Each module in this folder has `add_parser(subparsers)`, which adds its noun (or, for the verbs
of `lm` and `checkpoint`, its verb) and sets `func`; `build_parser` adds the nouns in the order of
`NOUNS`, `main` rewrites an older spelling (cli/spellings.py: `tfmr train` is `tfmr lm train`,
said in one note), parses and runs. docs/cli.md has the whole tree, old spellings beside new.
Each verb's parser owns its flags, so a flag the verb does not read is argparse's one-line error
(tfmr.programs.Parser), and every flag's --help shows its default.
`tfmr --version` prints the versions. Building the parser, `--help`, `--version`, `tfmr presets`
and a dictionary look-up (`tfmr g2p hello`) import no torch (tests/test_startup.py): each module
here imports the library's torch modules inside the functions that run a command, and `tfmr bench
NAME` / `tfmr experiment NAME` import their module only when run (tfmr.programs.lazy_commands).
Common flags (tfmr/programs.py): --preset NAME, --config FILE (YAML/TOML), --set key=value
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

from .. import __version__
from ..programs import Parser
from . import bench, checkpoint, experiment, explore, g2p, lm, presets, spellings, tokenizer, viz
from .common import USER_ERRORS, config_flags, guarded, load_model, resolve_config  # noqa: F401 (public)

# every task's presets in the one registry, without torch, in the order `tfmr presets` lists them
# isort: off
from ..tasks import g2p_presets  # noqa: F401
from ..tasks import copytask_presets  # noqa: F401
# isort: on

NOUNS = (lm, g2p, checkpoint, tokenizer, bench, experiment, viz, explore, presets)


def build_parser() -> Parser:
    parser = Parser(
        prog="tfmr",
        description="Transformers, every concept, real and fast. "
        "tfmr NOUN VERB [flags]; tfmr NOUN --help lists the verbs.",
    )
    parser.add_argument(
        "--version", action=Version, nargs=0, help="print tfmr's version (and torch's) and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="NOUN")
    for noun in NOUNS:
        noun.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        argv = spellings.modern(sys.argv[1:] if argv is None else argv)
    except USER_ERRORS as e:
        print(f"tfmr: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # A command that sets `intermixed=DEST` takes positionals after its options too (`tfmr g2p
    # hello --model-only world`): argparse leaves those over, and they join DEST in order.
    dest = getattr(args, "intermixed", None)
    if dest and extra and not any(e.startswith("-") and e != "-" for e in extra):
        setattr(args, dest, list(getattr(args, dest)) + extra)
    elif extra:
        innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return guarded(args.func, args)
    except BrokenPipeError:  # `tfmr lm generate ... | head`: the reader has gone; stop quietly
        quiet_stdout()
        return 0
    except KeyboardInterrupt:  # Ctrl-C: what was saved has been said ("continue with --resume")
        print("tfmr: interrupted", file=sys.stderr)
        return 130


class Version(argparse.Action):
    """--version: `tfmr X.Y.Z (torch A.B.C, Python D.E.F)`. Torch's version is read from its
    installed metadata, never by importing it, so the answer stays as quick as --help."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def version_line() -> str:
    """tfmr's version, with torch's (from its package metadata) and Python's."""
    import importlib.metadata
    import platform

    try:
        torch = f"torch {importlib.metadata.version('torch')}"
    except importlib.metadata.PackageNotFoundError:
        torch = "torch not installed"
    return f"tfmr {__version__} ({torch}, Python {platform.python_version()})"


def innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command `args` chose, `tfmr g2p export` say, to name it in an error."""
    for action in parser._actions:
        if (
            isinstance(action, argparse._SubParsersAction)
            and getattr(args, action.dest, None) in action.choices
        ):
            return innermost(action.choices[getattr(args, action.dest)], args)
    return parser


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
