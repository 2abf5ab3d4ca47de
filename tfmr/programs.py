"""What every program shares: the argument helpers and the user-error rule.

    Parser                  argparse.ArgumentParser whose --help shows each flag's default and whose
                            errors are one line `tfmr: error: ...` (exit code 2); with `populate`,
                            its flags are added when first read
    lazy_commands(sub, ...) `tfmr bench NAME` and the like: each NAME's module imported only when run
    USER_ERRORS             mistakes a user can fix; `guarded` prints them as one line, exit code 2
    config_flags(p, ...)    --preset NAME, --config FILE, --set KEY=VALUE (repeatable), --data PATH
    resolve_config(args)    those flags through the one resolver (tfmr.presets.resolve), shortened
                            under TFMR_DOCS_SHORT=1
    short(what, value)      a size capped for a shortened run (TFMR_DOCS_SHORT=1: the docs test);
    shortened(cfg)          the same for a config's training settings; both change nothing unset
    progress_bar(...)       a tqdm bar on stderr for long work, shown on a terminal (TFMR_PROGRESS)
    guarded(func, args)     run a program's main under the user-error rule
    out_folder(path)        an --out folder for reports (tfmr.folders' policy), created
    positive_int, ...       argparse types for counts (a bad value is argparse's exit 2)
    torch_device(name)      a --device flag's torch.device, or one line saying why not

The programs (the `tfmr` command in tfmr/cli/, the tasks, the benchmarks, the experiments,
`tfmr explore`) take their flags from here, so they read the same everywhere, and none of them
imports the command line (tests/test_layout.py). The library (tfmr/*.py) never imports this file.
Left out: loading a checkpoint for a command (tfmr/cli/common.py).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import re
import sys
import tokenize
from collections.abc import Callable, Mapping
from pathlib import Path

from .config import ConfigError, RunConfig
from .errors import CheckpointError, DataError

USER_ERRORS = (
    ConfigError,
    DataError,
    CheckpointError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def shows_default(action: argparse.Action) -> bool:
    """Whether --help should show this flag's default: a flag that takes a value and has one (not
    None, not an empty list). Switches (store_true and the like) and hidden flags have none to show."""
    default = action.default
    return (
        bool(action.option_strings)
        and action.nargs != 0
        and action.help is not argparse.SUPPRESS
        and default is not None
        and default is not argparse.SUPPRESS
        and default != []
    )


class DefaultsFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless the help already says it ("default 5")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            shows_default(action)
            and "%(default)" not in text
            and not re.search(rf"default:? {re.escape(str(action.default))}\b", text)
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """The parser of every program: defaults shown in --help, and a usage mistake (an unknown
    flag, a missing one, a bad value) said in one line `tfmr: error: ...` with exit code 2.

    `populate(parser)`, when given, adds the parser's flags the first time anything reads them
    (parsing, --help, a test walking the parsers): `tfmr bench NAME` and `tfmr experiment NAME`
    import their module, and with it torch, only when that command is the one asked for."""

    def __init__(self, *args, populate: Callable[[Parser], None] | None = None, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
        self._populate = populate

    # argparse reads every flag through `_actions` (parsing, usage, help), so a lazy parser fills
    # itself on the first read; while it fills, `_populate` is already None (no recursion)
    @property
    def _actions(self) -> list[argparse.Action]:
        populate = self.__dict__.get("_populate")
        if populate is not None:
            self._populate = None
            populate(self)
        return self.__dict__["_actions"]

    @_actions.setter
    def _actions(self, actions: list[argparse.Action]) -> None:
        self.__dict__["_actions"] = actions

    def error(self, message: str):
        print(f"tfmr: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def lazy_commands(sub, modules: Mapping[str, str]) -> None:
    """Add one command per `modules` entry (name -> dotted module with `add_arguments(parser)`
    and `main(args)`) to the subparsers `sub`. Each one's help line is its module's docstring's
    first line, read from the file without importing it; its flags are added, and the module
    imported, only when the command is parsed or its --help asked for (Parser's `populate`)."""
    for name, dotted in modules.items():
        doc = first_doc_line(dotted)
        sub.add_parser(name, help=doc, description=doc, populate=_importer(dotted))


def _importer(dotted: str) -> Callable[[argparse.ArgumentParser], None]:
    def populate(parser: argparse.ArgumentParser) -> None:
        module = importlib.import_module(dotted)
        module.add_arguments(parser)
        parser.set_defaults(func=module.main)

    return populate


def first_doc_line(dotted: str) -> str:
    """The first line of module `dotted`'s docstring, read from its source without running it."""
    spec = importlib.util.find_spec(dotted)
    if spec is None or not spec.origin:
        return ""
    with tokenize.open(spec.origin) as f:
        for token in tokenize.generate_tokens(f.readline):
            if token.type == tokenize.STRING:  # the first statement: the docstring, if any
                return (ast.literal_eval(token.string).strip().splitlines() or [""])[0]
            if token.type not in (
                tokenize.COMMENT,
                tokenize.NL,
                tokenize.NEWLINE,
                tokenize.ENCODING,
            ):
                return ""
    return ""


def config_flags(
    p: argparse.ArgumentParser,
    preset: str = "default",
    data: bool = True,
    preset_help: str | None = None,
) -> None:
    """The common flags: --preset, --config, --set (repeatable) and, with `data`, --data."""
    p.add_argument(
        "--preset",
        default=preset,
        help=preset_help or f"starting configuration (default {preset}; see `tfmr presets`)",
    )
    p.add_argument("--config", help="YAML or TOML file overlaid on the preset")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set model.heads=8 (repeatable)",
    )
    if data:
        p.add_argument("--data", help="shortcut for --set data.path=PATH")


def resolve_config(args, cls: type = RunConfig, saved=None, overrides=()):
    """The config the flags of `config_flags` describe: preset (or the run saved in the checkpoint
    folder `saved`) -> --config file -> --data -> `overrides` (a command's own shortcuts) -> --set."""
    from .presets import resolve

    cfg = resolve(
        args.preset,
        args.config,
        getattr(args, "data", None),
        [*overrides, *args.set],
        cls=cls,
        saved=saved,
    )
    return shortened(cfg)


# A shortened run: TFMR_DOCS_SHORT=1 caps every long piece of work a command does, so the docs test
# (tests/test_docs_commands.py) can run every documented command, as written, in a few minutes.
# Unset, empty or 0, nothing changes. The caps by what they limit:
SHORT_ENV = "TFMR_DOCS_SHORT"
SHORT_CAPS = {
    "steps": 8,  # training steps (and warmup, eval and checkpoint intervals: at most this)
    "every": 1,  # checkpoint interval of a run that keeps snapshots: `--last 8` finds eight
    "minutes": 1.0,  # a wall-clock budget (train.max_minutes): the steps' cap comes first
    "batches": 2,  # evaluation batches (train.eval_iters)
    "batch": 4,  # sequences (or pairs) in a training batch
    "batch_tokens": 256,  # padded tokens in a batch of pairs
    "words": 40,  # sources decoded: test and dev words, an evaluation's --limit, prompts
    "train_words": 500,  # the words a benchmark's peer trains on
    "repeats": 1,  # a benchmark's repeats and rounds
    "variants": 2,  # the settings an experiment's grid tries on each axis
    "threads": 1,  # torch threads a run asks for (train.threads): small batches gain nothing from more
    "tokens": 8,  # tokens generated, sizes of a benchmark's inputs
}
# (section, field, cap) of a config that `shortened` caps, where the config has them
SHORT_FIELDS = (
    ("train", "steps", "steps"),
    ("train", "warmup", "steps"),
    ("train", "eval_every", "steps"),
    ("train", "log_every", "steps"),
    ("train", "checkpoint_every", "steps"),
    ("train", "eval_iters", "batches"),
    ("train", "batch_size", "batch"),
    ("train", "batch_tokens", "batch_tokens"),
    ("train", "max_minutes", "minutes"),
    ("train", "threads", "threads"),
    ("train", "eval_pairs", "words"),
    ("data", "dev_words", "words"),
    ("sample", "max_new_tokens", "tokens"),
)


def shortening() -> bool:
    """Whether this is a shortened run: TFMR_DOCS_SHORT set to anything but empty or 0 (the one
    place that reads it)."""
    return os.environ.get(SHORT_ENV, "") not in ("", "0")


def short(what: str, value=None):
    """`value` (None: no limit) capped at SHORT_CAPS[what] in a shortened run; as it is otherwise."""
    if not shortening():
        return value
    cap = SHORT_CAPS[what]
    return cap if value is None else type(value)(min(value, cap))


def shortened(cfg):
    """`cfg` with the settings of SHORT_FIELDS it has capped by `short` (unchanged unless shortened);
    a wall-clock budget or a count of 0 (none) stays 0."""
    for section, name, what in SHORT_FIELDS:
        part = getattr(cfg, section, None)
        if part is not None and getattr(part, name, None):
            setattr(part, name, short(what, getattr(part, name)))
    train = getattr(cfg, "train", None)
    if getattr(train, "keep_last", 0):  # snapshots are kept at checkpoints: one each step
        train.checkpoint_every = short("every", train.checkpoint_every)
    return cfg


# Progress of long work (decoding a test split, timing a benchmark): a tqdm bar on standard error,
# as training's, shown when standard error is a terminal; TFMR_PROGRESS=1 shows it anyway, 0 never.
PROGRESS_ENV = "TFMR_PROGRESS"


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True):
    """A tqdm bar for `total` units of work (None: a count without an end), on standard error;
    disabled unless `enabled` (a command's --no-progress) and standard error is a terminal or
    TFMR_PROGRESS=1. Use it as a context manager and `update(n)` it."""
    from tqdm.auto import tqdm

    on = shows_progress(enabled)
    return tqdm(
        total=total, desc=desc, unit=unit, disable=not on, file=sys.stderr, dynamic_ncols=True
    )


def shows_progress(enabled: bool = True) -> bool:
    """Whether progress is shown: `enabled`, and TFMR_PROGRESS=1 or standard error a terminal
    (TFMR_PROGRESS=0: never)."""
    forced = os.environ.get(PROGRESS_ENV, "")
    return enabled and forced != "0" and (forced != "" or sys.stderr.isatty())


def guarded(func, args) -> int:
    """func(args), with a user mistake printed as one line `tfmr: error: ...` and exit code 2."""
    try:
        return func(args)
    except USER_ERRORS as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"tfmr: error: {msg}", file=sys.stderr)
        return 2


def out_folder(path, flag: str = "--out") -> Path:
    """The output folder `path` of a report (plots, tables, an experiment's runs), created if need
    be; a file there, an artefact (a checkpoint, an export, ...), a folder inside one or one that
    cannot be made is a one-line ConfigError naming the flag (tfmr.folders)."""
    from .folders import check_output

    check_output(path, "report", flag=flag)
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot create the folder ({e.strerror or e})") from None
    return path


def _number(kind, low: float, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in its message
    return parse


positive_int = _number(int, 1, "a positive integer")
count = _number(int, 0, "an integer >= 0")
positive_float = _number(float, 1e-300, "a positive number")


def torch_device(name: str):
    """torch.device(name), refusing unknown names and devices this machine lacks (ConfigError)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device here (torch {torch.__version__})")
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise ConfigError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available here")
    return device
