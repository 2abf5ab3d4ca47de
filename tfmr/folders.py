"""Output folders: what a folder holds, and the one policy every command that writes a folder follows.

    classify(path)                  what `path` holds: one of KINDS
    check_output(path, writes, ...) refuse (FolderError, one line) a write that could lose something;
                                    nothing is created or deleted here
    staged(path)                    write into a sibling temporary folder; renamed into place at success

The policy (docs/reliability.md, section 5, has it as a table):

- a missing or empty folder is written;
- a folder holding what the command writes (a run, a checkpoint, an export, ...) is replaced only
  with --overwrite (a run or a fine-tuning run also continues with --resume), and only after every
  other check of the command passed: the replacement is written beside it and renamed into place;
- a folder holding anything else (another kind of artefact, or files tfmr did not write) is never
  written over, with or without --overwrite;
- nothing is written inside another artefact (a checkpoint, an export, a Hugging Face folder, ONNX
  graphs, a tokenizer folder, a run's own checkpoint / best / snapshots folders), over the source
  the command reads, over a folder holding that source, or over the working directory.

Left out: locking (a run's `run.lock`, tfmr/runfolder.py) and the atomic checkpoint swap itself
(tfmr/checkpoint.py); this module decides what may be written where.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from safetensors import SafetensorError

from .config import ConfigError

MANIFEST, EXPORT_INFO = "manifest.json", "export.json"  # as tfmr.checkpoint writes them
ADAPTATION = "adaptation.safetensors"  # tfmr.adapters.ADAPTATION_FILE
TOKENIZER_FILES = {"tokenizer.json", "vocab.json"}
ONNX_FILES = ("prefill.onnx", "step.onnx", "encoder.onnx", "decoder.onnx")
RUN_OWNED = (
    "checkpoint",
    "checkpoint.old",
    "checkpoint.tmp",
    "best",
    "best.old",
    "best.tmp",
    "snapshots",
)
RUN_LEFTOVERS = {
    "run.lock",
    "metrics.jsonl",
    "loss.png",
    "checkpoint.tmp",
    "finetune.json",
    "teacher.json",  # tasks/g2p_distill.py: written before the first step
}  # stopped before
# its first save (finetune.json: a g2p finetune run's record)

KINDS = {
    "missing": "nothing",
    "empty": "an empty folder",
    "file": "a file",
    "started": "a run stopped before its first checkpoint",
    "run": "a run",
    "adapter": "a fine-tuning run (adaptation.safetensors)",
    "checkpoint": "a checkpoint",
    "export": "an exported model (export.json)",
    "hf": "a Hugging Face model folder (config.json with a model_type)",
    "onnx": "ONNX graphs",
    "tokenizer": "a tokenizer (tokenizer.json)",
    "foreign": "files tfmr did not write",
}
WRITERS = ("run", "adapter", "checkpoint", "export", "hf", "onnx", "tokenizer", "report")
SEALED = (
    "checkpoint",
    "export",
    "hf",
    "onnx",
    "tokenizer",
    "adapter",
)  # nothing is written inside these


class FolderError(ConfigError):
    """A write that could lose or break something; the CLI prints it as one line, exit code 2."""


def _is_hf(path: Path) -> bool:
    config = path / "config.json"
    try:
        if config.stat().st_size > 1 << 20:
            return False
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("model_type"), str)


def _marked(path: Path) -> str | None:
    """The artefact kind `path`'s marker files name (no listing of the folder), or None."""
    if (path / ADAPTATION).is_file():
        return "adapter"
    if (path / "checkpoint").is_dir() or (path / "checkpoint.old").is_dir():
        return "run"
    if (path / MANIFEST).is_file():
        return "export" if (path / EXPORT_INFO).is_file() else "checkpoint"
    if _is_hf(path):
        return "hf"
    if any((path / name).is_file() for name in ONNX_FILES):
        return "onnx"
    if (path / "tokenizer.json").is_file() and _names(path) <= TOKENIZER_FILES:
        return "tokenizer"
    return None


def _names(path: Path) -> set[str]:
    try:
        return {p.name for p in path.iterdir()}
    except OSError:
        return {"?"}


def classify(path: str | Path) -> str:
    """What the folder `path` holds: a key of KINDS."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "file"
    kind = _marked(path)
    if kind:
        return kind
    names = _names(path)
    if not names:
        return "empty"
    return "started" if names <= RUN_LEFTOVERS else "foreign"


def describe(path: Path, kind: str) -> str:
    """KINDS[kind], said more precisely where that helps the user choose."""
    if kind == "checkpoint" and (path / "state.json").is_file():
        return "a training checkpoint (it can resume)"
    if kind == "foreign":
        try:
            names = sorted(p.name for p in path.iterdir())[:3]
        except OSError:
            names = []
        return f"other files ({', '.join(names)}{', ...' if len(names) == 3 else ''})"
    return KINDS[kind]


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(path))  # '.', '..' and 'a/../b' made plain, links left as they are


def _check_place(path: Path, shown: str, sources: Iterable[str | Path], replaces: bool) -> None:
    """Never over the working directory (for a write that may replace its folder), over or around
    a source, nor inside another artefact."""
    here = _absolute(os.getcwd())
    if replaces and (path == here or path in here.parents):
        raise FolderError(
            f"{shown} is the folder you are in (or holds it); name a new folder to write to"
        )
    for source in sources:
        src = _absolute(source)
        if path == src or path in src.parents or src in path.parents:
            raise FolderError(
                f"{shown} is where the input {source} is read from; write to another folder"
            )
    for parent in path.parents:
        kind = _marked(parent)
        if kind in SEALED:
            raise FolderError(
                f"{shown} is inside {KINDS[kind]} ({parent}); write to a folder of its own"
            )
        if kind == "run":
            owned = path.relative_to(parent).parts[0]
            if owned in RUN_OWNED:
                raise FolderError(
                    f"{shown} is the run {parent}'s own {owned} folder; write to a folder of its own"
                )


def check_output(
    path: str | Path,
    writes: str,
    overwrite: bool = False,
    resume: bool = False,
    sources: Iterable[str | Path] = (),
    flag: str = "--out",
) -> Path:
    """Refuse (FolderError) writing `writes` (one of WRITERS) to `path` where that could lose or
    break something (see the module docstring); return the folder as an absolute path. Nothing is
    created or deleted. `resume` (a run or fine-tuning run continued) needs such a run there."""
    assert writes in WRITERS, writes
    shown = f"{flag} {path}"
    absolute = _absolute(path)
    kind = classify(absolute)
    if kind == "file":
        raise FolderError(f"{shown} is a file, not a folder")
    _check_place(absolute, shown, sources, replaces=writes != "report")
    if resume:
        if kind != writes:
            raise FolderError(
                f"nothing to resume: {path} holds {describe(absolute, kind)}, not {KINDS[writes]}"
            )
        return absolute
    if kind in ("missing", "empty") or (kind == "started" and writes in ("run", "adapter")):
        return absolute
    if writes == "report":
        if kind in SEALED:
            raise FolderError(f"{shown} holds {describe(absolute, kind)}; write to another folder")
        return absolute
    if kind != writes:
        held = "is a folder of" if kind == "foreign" else "holds"
        raise FolderError(
            f"{shown} {held} {describe(absolute, kind)}; {KINDS[writes]} is never written over "
            "it (not even with --overwrite): choose a new or empty folder"
        )
    if not overwrite:
        again = (
            "continue it with --resume, or start over with --overwrite"
            if writes in ("run", "adapter")
            else "replace it with --overwrite"
        )
        raise FolderError(
            f"{path} already holds {describe(absolute, kind)}; {again} (or choose another {flag})"
        )
    return absolute


@contextlib.contextmanager
def staged(path: str | Path) -> Iterator[Path]:
    """A sibling temporary folder to write into; at success it replaces `path` (renamed into
    place, the old folder removed only then); on failure it is removed and `path` is untouched.
    A write that fails for want of space or permission is one line (FolderError)."""
    path = _absolute(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        _swap(tmp, path)
    except (
        OSError,
        SafetensorError,
    ) as e:  # safetensors reports a full or read-only disk as a SafetensorError
        reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise FolderError(f"cannot write {path}: {reason}; nothing was changed there") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap(tmp: Path, path: Path) -> None:
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def clear_run(path: Path, extra: Iterable[str] = ()) -> None:
    """Remove what a previous run left in its folder (called by a run started with --overwrite,
    once every check passed): its checkpoints, snapshots, best weights and metrics."""
    for name in (*RUN_OWNED, "metrics.jsonl", "loss.png", *extra):
        target = path / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
