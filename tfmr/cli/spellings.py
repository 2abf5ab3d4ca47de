"""The spellings the parser does not hold: yesterday's commands, and `tfmr g2p WORD ...`.

The command line is `tfmr NOUN VERB [flags]` (docs/cli.md). Before it is parsed, `modern(argv)`
rewrites a command line written in an older spelling to today's, with one note on standard
error naming the new spelling; the command then runs (and exits) as the new one would:

    tfmr train | generate | eval | finetune   ->  tfmr lm train | generate | eval | finetune
    tfmr average | quantize                   ->  tfmr checkpoint average | quantize
    tfmr convert --from-hf DIR                ->  tfmr checkpoint import hf --checkpoint DIR
    tfmr export --to hf|onnx                  ->  tfmr checkpoint export hf|onnx
    tfmr serve --g2p                          ->  tfmr g2p serve
    tfmr copytask                             ->  tfmr experiment copytask
    tfmr g2p predict WORD ...                 ->  tfmr g2p pronounce WORD ...

`tfmr g2p WORD ...` is no old spelling but the short one (speech pipelines call it): words right
after `g2p`, where a verb would stand, are pronounced, silently. A verb is a verb only there, so
`tfmr g2p pronounce train` pronounces the word "train".
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from ..config import ConfigError
from .g2p import VERBS as G2P_VERBS

# old first word -> today's words; the rest of the command line follows unchanged
MOVED = {
    "train": ["lm", "train"],
    "generate": ["lm", "generate"],
    "eval": ["lm", "eval"],
    "finetune": ["lm", "finetune"],
    "average": ["checkpoint", "average"],
    "quantize": ["checkpoint", "quantize"],
    "copytask": ["experiment", "copytask"],
}
HELP = ("-h", "--help")


def _take(args: list[str], flag: str) -> tuple[str | None, list[str]]:
    """(the value of `flag` given as `FLAG VALUE` or `FLAG=VALUE`, the other arguments)."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1], args[:i] + args[i + 2 :]
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1 :], args[:i] + args[i + 1 :]
    return None, args


Rewrite = tuple[
    list[str], tuple[str, str] | None
]  # (argv today, (old words, new words) to note, or None)


def _convert(rest: list[str]) -> Rewrite:
    source, rest = _take(rest, "--from-hf")
    flags = [] if source is None else ["--checkpoint", source]
    return ["checkpoint", "import", "hf", *flags, *rest], (
        "convert --from-hf",
        "checkpoint import hf --checkpoint",
    )


def _export(rest: list[str]) -> Rewrite:
    target, rest = _take(rest, "--to")
    target_words = [] if target is None else [target]
    return ["checkpoint", "export", *target_words, *rest], (
        " ".join(["export", "--to", *target_words]),
        " ".join(["checkpoint", "export", *target_words]),
    )


def _serve(rest: list[str]) -> Rewrite:
    if "--g2p" not in rest:
        raise ConfigError(
            "say what to serve: tfmr g2p serve (the G2P endpoint, once `tfmr serve --g2p`)"
        )
    return ["g2p", "serve", *[a for a in rest if a != "--g2p"]], ("serve --g2p", "g2p serve")


def _g2p(rest: list[str]) -> Rewrite:
    if rest and rest[0] == "predict":
        return ["g2p", "pronounce", *rest[1:]], ("g2p predict", "g2p pronounce")
    if rest and (rest[0] in G2P_VERBS or rest[0] in HELP):
        return ["g2p", *rest], None
    return ["g2p", "pronounce", *rest], None  # words (or - or --text) where the verb would be


def _moved(first: str) -> Callable[[list[str]], Rewrite]:
    return lambda rest: ([*MOVED[first], *rest], (first, " ".join(MOVED[first])))


REWRITES: dict[str, Callable[[list[str]], Rewrite]] = {
    **{first: _moved(first) for first in MOVED},
    "convert": _convert,
    "export": _export,
    "serve": _serve,
    "g2p": _g2p,
}


def modern(argv: Sequence[str]) -> list[str]:
    """argv in today's spelling; an old spelling is said once on standard error (ConfigError: an
    old spelling that names no command today, `tfmr serve` without --g2p)."""
    argv = list(argv)
    if not argv or argv[0] not in REWRITES:
        return argv
    new, note = REWRITES[argv[0]](argv[1:])
    if note:
        print(
            f"tfmr: note: 'tfmr {note[0]}' is now 'tfmr {note[1]}'; the old spelling still works for now",
            file=sys.stderr,
        )
    return new
