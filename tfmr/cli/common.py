"""What the command modules share: the user-error rule, the config flags, and loading --checkpoint.

    USER_ERRORS             mistakes a user can fix; `guarded` prints them as one line, exit code 2
    config_flags(p, ...)    --preset NAME, --config FILE, --set KEY=VALUE (repeatable), --data PATH
    resolve_config(args)    those flags through the one resolver (tfmr.presets.resolve)
    guarded(func, args)     run a command function under the user-error rule
    load_model(dir)         (model, tokenizer, RunConfig) of --checkpoint: tfmr.load (a checkpoint,
                            an export or a Hugging Face folder, said on stderr)
    encode_text(tok, text)  ids, or one line naming the characters the tokenizer never saw
    out_folder(path)        an --out folder for reports (tfmr.folders' policy), created
    positive_int, ...       argparse types for counts (a bad value is argparse's exit 2)

Every program (the `tfmr` command, `python -m tfmr.tasks.copytask`, the experiments and the
benchmarks) takes its config flags from here, so they read the same everywhere.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checkpoint import CheckpointError
from ..config import ConfigError, RunConfig
from ..data import DataError

USER_ERRORS = (ConfigError, DataError, CheckpointError, FileNotFoundError, FileExistsError, IsADirectoryError,
               NotADirectoryError, PermissionError)


def config_flags(p: argparse.ArgumentParser, preset: str = "default", data: bool = True,
                 preset_help: str | None = None) -> None:
    """The common flags: --preset, --config, --set (repeatable) and, with `data`, --data."""
    p.add_argument("--preset", default=preset,
                   help=preset_help or f"starting configuration (default {preset}; see `tfmr presets`)")
    p.add_argument("--config", help="YAML or TOML file overlaid on the preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set model.heads=8 (repeatable)")
    if data:
        p.add_argument("--data", help="shortcut for --set data.path=PATH")


def resolve_config(args, cls: type = RunConfig, saved=None, overrides=()):
    """The config the flags of `config_flags` describe: preset (or the run saved in the checkpoint
    folder `saved`) -> --config file -> --data -> `overrides` (a command's own shortcuts) -> --set."""
    from ..presets import resolve

    return resolve(args.preset, args.config, getattr(args, "data", None), [*overrides, *args.set], cls=cls,
                   saved=saved)


def guarded(func, args) -> int:
    """func(args), with a user mistake printed as one line `tfmr: error: ...` and exit code 2."""
    try:
        return func(args)
    except USER_ERRORS as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"tfmr: error: {msg}", file=sys.stderr)
        return 2


def checkpoint_flags(p: argparse.ArgumentParser, what: str = "a checkpoint folder (RUN/checkpoint)") -> None:
    """--checkpoint (a tfmr checkpoint or a Hugging Face folder) and --allow-pickle."""
    p.add_argument("--checkpoint", required=True,
                   help=f"{what}, or a Hugging Face model folder (config.json + safetensors + tokenizer.json)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="a Hugging Face folder with only pytorch_model.bin: read it with "
                        "torch.load(weights_only=True) (default: refused)")


def load_model(checkpoint_dir, allow_pickle: bool = False, expect: type | None = RunConfig):
    """(model, tokenizer or vocabulary, config) of --checkpoint, through tfmr.load: a checkpoint, an
    export or a Hugging Face folder (said on stderr); a run folder is pointed at its checkpoint.
    `expect`: the config class the command reads (None: any, a G2P checkpoint's vocab.json too)."""
    from ..loading import load

    loaded = load(checkpoint_dir, expect, runs=False, allow_pickle=allow_pickle)
    if loaded.kind == "hf":
        print(f"loaded Hugging Face folder {checkpoint_dir} (model_type {loaded.model_type})", file=sys.stderr)
    return loaded.model, loaded.vocab, loaded.config


def encode_text(tokenizer, text: str, what: str = "the prompt") -> list[int]:
    """tokenizer.encode(text), a character the tokenizer never saw being one line naming it
    (ConfigError) instead of a traceback."""
    try:
        return tokenizer.encode(text)
    except ValueError as e:
        raise ConfigError(f"{what} cannot be encoded: {e}") from None


def out_folder(path, flag: str = "--out") -> Path:
    """The output folder `path` of a report (plots, tables, an experiment's runs), created if need
    be; a file there, an artefact (a checkpoint, an export, ...), a folder inside one or one that
    cannot be made is a one-line ConfigError naming the flag (tfmr.folders)."""
    from ..folders import check_output

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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available here")
    return device


def serve_until_interrupted(server, banner: str) -> int:
    """Print `banner`, serve until Ctrl-C (then "stopped" on standard error), close the socket: 0.
    The loop of every local server command (`tfmr explore`, `tfmr serve`)."""
    print(banner, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
