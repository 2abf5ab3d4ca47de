"""Checkpoints: a folder of safetensors and JSON, written atomically, verified on load.

    model.safetensors     weights (tied matrices stored once)
    config.json           the resolved RunConfig
    tokenizer.json        the tokenizer the model was trained with
    state.safetensors     optimizer moments, RNG states, data-sampler state (tensors)
    state.json            step, optimizer param groups, anything else plain
    manifest.json         sha256 of every file above, written last

A sharded checkpoint (train.parallel=fsdp, tfmr/parallel.py) holds torch.distributed.checkpoint
shards (`.metadata`, `__R_0.distcp`) and `sharded.json` instead of model.safetensors and the
optimizer tensors; the same manifest and atomic swap cover it.

`export` writes an inference-only copy (weights in a smaller float type such as fp16, config,
tokenizer, `export.json` saying where it came from; no training state), for shipping a model.
`snapshot` keeps a weights-only copy of a checkpoint (the last few, for averaging) and `average`
writes the element-wise mean of several checkpoints' weights as a new checkpoint (checkpoint
averaging, as in Vaswani et al. 2017 and fairseq's average_checkpoints: a cheap ensemble of the
last points of one run).

Saving writes a sibling temporary folder (each file fsync'd), then swaps it into place with
renames, so a crash never leaves a half-written checkpoint where the real one was. Loading checks
every hash before reading anything, and reads only safetensors and JSON: nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model

from .config import ConfigError, parse_json
from .errors import CheckpointError  # defined in errors.py (torch-free), re-exported here
from .folders import check_output

MANIFEST = "manifest.json"
SHARDED = (
    "sharded.json"  # in a sharded (fsdp) checkpoint only: written by tfmr.parallel.save_sharded
)
AVERAGED = "averaged_from"  # model.safetensors metadata of an average: its checkpoints and steps
EXPORT_INFO = "export.json"  # in an exported model only: its dtype and where it came from
ENSEMBLE = "ensemble.json"  # in an exported ensemble only: its members' configs, weights, combine


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_file(tensors: dict, path: str | Path, metadata: dict | None = None) -> None:
    """safetensors' save_file, leaving the file with the mode any file written here gets (0666
    less the umask: 0644 under umask 022). safetensors 0.7 and later write through a private
    temporary file and keep its mode, 0600, which other users and tools then cannot read."""
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)  # looked up at each call
    os.chmod(path, _default_mode(Path(path).parent))


def _default_mode(directory: Path) -> int:
    """The mode a new file in `directory` gets from open(): 0666 less the umask, read from a probe
    file (setting the umask to read it would race with other threads creating files)."""
    probe = directory / f".mode-probe-{os.getpid()}"
    fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o666)
    try:
        return os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flatten_optimizer(opt_state: dict) -> tuple[dict, dict]:
    """Optimizer state_dict -> (tensors for safetensors, plain rest for JSON)."""
    tensors, plain = {}, {"param_groups": opt_state["param_groups"], "state": {}}
    for idx, slots in opt_state["state"].items():
        plain["state"][str(idx)] = []
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain["state"][str(idx)].append([name, value])
    return tensors, plain


def _unflatten_optimizer(tensors: dict, plain: dict) -> dict:
    state: dict = {int(i): dict(extra) for i, extra in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def _fresh_tmp(directory: Path) -> Path:
    if (
        directory.exists() and not directory.is_dir()
    ):  # never replace a user's file with a checkpoint
        raise CheckpointError(f"{directory} is a file; a checkpoint is written as a folder")
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise CheckpointError(f"cannot write the checkpoint {directory}: {e.strerror}") from None
    return tmp


@contextlib.contextmanager
def _writing(tmp: Path, directory: Path):
    """A failed write (disk full, permissions) removes the temporary folder, leaves the previous
    checkpoint as it was and says so in one line."""
    try:
        yield
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as a SafetensorError
        shutil.rmtree(tmp, ignore_errors=True)
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"cannot write the checkpoint {directory}: {reason}{where}; "
            "the previous checkpoint, if any, is unchanged"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _owns_memory(t: torch.Tensor) -> bool:
    """A contiguous tensor that covers its whole storage: what safetensors writes as it is."""
    storage = t.untyped_storage()
    return (
        t.is_contiguous()
        and t.data_ptr() == storage.data_ptr()
        and t.numel() * t.element_size() == storage.nbytes()
    )


def write_weights(model: torch.nn.Module, path: str | Path, metadata: dict | None = None) -> None:
    """`model`'s state dict as a safetensors file: a tensor under several names (tied embeddings)
    written once, under the first of its names in sorted order, as safetensors' save_model does
    (load_model ties it again); a view (a transposed matrix, a slice of a fused one, as a Hugging
    Face folder loads them) packed into memory of its own first."""
    names: dict[tuple, list[str]] = {}
    state = model.state_dict()
    for name, t in state.items():
        names.setdefault((t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride()), []).append(
            name
        )
    out, aliases = {}, dict(metadata or {})
    for group in names.values():
        kept, *others = sorted(group)
        t = state[kept].detach()
        out[kept] = t if _owns_memory(t) else t.clone(memory_format=torch.contiguous_format)
        aliases.update({other: kept for other in others if other not in aliases})
    save_file(out, str(path), metadata=aliases or None)


def save(
    directory: str | Path,
    model: torch.nn.Module,
    config: dict,
    tokenizer=None,
    optimizer: torch.optim.Optimizer | None = None,
    tensors: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a complete checkpoint to `directory`, replacing any previous one atomically."""
    directory = Path(directory)
    tmp = _fresh_tmp(directory)
    with _writing(tmp, directory):
        write_weights(model, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
        if tokenizer is not None:
            tokenizer.save(tmp)
        state_tensors = dict(tensors or {})
        plain = dict(extra or {})
        if optimizer is not None:
            opt_tensors, plain["optimizer"] = _flatten_optimizer(optimizer.state_dict())
            state_tensors.update(opt_tensors)
        if state_tensors or plain:
            save_file(state_tensors, str(tmp / "state.safetensors"))
            (tmp / "state.json").write_text(json.dumps(plain, indent=2))
        return _commit(tmp, directory)


def _commit(tmp: Path, directory: Path) -> Path:
    """fsync every file of `tmp`, write its manifest, then swap `tmp` into `directory`'s place."""
    files = sorted(p.name for p in tmp.iterdir() if p.name != MANIFEST)
    for name in files:
        with open(tmp / name, "rb+") as f:
            os.fsync(f.fileno())
    manifest = {name: _sha256(tmp / name) for name in files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    _fsync_dir(tmp)
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    _fsync_dir(directory.parent)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def resolve(directory: str | Path) -> Path:
    """The checkpoint folder to read: `directory`, or its `.old` twin if a save was cut short."""
    directory = Path(directory)
    if (directory / MANIFEST).exists():
        return directory
    old = directory.with_name(directory.name + ".old")
    if (old / MANIFEST).exists():
        return old
    if directory.is_file():
        raise CheckpointError(f"{directory} is a file; a checkpoint is a folder (RUN/checkpoint)")
    inner = directory / "checkpoint"
    if (inner / MANIFEST).exists() or (inner.with_name("checkpoint.old") / MANIFEST).exists():
        raise CheckpointError(f"{directory} is a run folder; its checkpoint is {inner}")
    if directory.exists():
        raise CheckpointError(
            f"{directory} is not a complete checkpoint (no {MANIFEST}); it may be a cut-short save"
        )
    raise CheckpointError(f"no checkpoint at {directory}")


def verify(directory: str | Path) -> Path:
    """Check every file against the manifest; raise CheckpointError on any mismatch."""
    directory = resolve(directory)
    try:
        manifest = parse_json((directory / MANIFEST).read_bytes(), "")
    except ConfigError:  # invalid JSON, too deep, a 5,000-digit number
        raise CheckpointError(f"{directory / MANIFEST} is corrupt (not valid JSON)") from None
    if not isinstance(manifest, dict) or not all(
        isinstance(v, str) and "/" not in k and k not in ("", ".", "..")
        for k, v in manifest.items()
    ):
        raise CheckpointError(
            f"{directory / MANIFEST} is corrupt (not a table of file names and sha256 digests)"
        )
    unlisted = sorted(
        p.name for p in directory.iterdir() if p.name != MANIFEST and p.name not in manifest
    )
    if unlisted:
        raise CheckpointError(
            f"checkpoint {directory}: {unlisted[0]} is not in its {MANIFEST} (a file added or "
            "dropped from the manifest after saving); refusing to load it"
        )
    for name, digest in manifest.items():
        path = directory / name
        if not path.exists():
            raise CheckpointError(f"checkpoint {directory} is incomplete: {name} is missing")
        if _sha256(path) != digest:
            raise CheckpointError(
                f"checkpoint file {path} does not match its recorded sha256: it was modified or "
                "corrupted after saving; refusing to load it"
            )
    return directory


def _read_json(path: Path):
    try:
        return parse_json(path.read_bytes(), "")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path.parent} has no {path.name}") from None
    except ConfigError as e:  # invalid JSON, nested too deep, a 5,000-digit number
        raise CheckpointError(
            f"{path} is corrupt (not valid JSON: {str(e).removeprefix('invalid JSON: ')})"
        ) from None


def read_ensemble(directory: Path) -> dict | None:
    """ENSEMBLE of a verified export: {"members": [config dicts], "weights", "combine"}, or None."""
    if not (directory / ENSEMBLE).is_file():
        return None
    data = _read_json(directory / ENSEMBLE)
    members = data.get("members") if isinstance(data, dict) else None
    if (
        not isinstance(members, list)
        or len(members) < 2
        or not all(isinstance(m, dict) for m in members)
    ):
        raise CheckpointError(f"{directory / ENSEMBLE} is corrupt (no list of member configs)")
    return data


def read_config(directory: str | Path) -> dict:
    directory = verify(directory)
    config = _read_json(directory / "config.json")
    if not isinstance(config, dict):
        raise CheckpointError(f"{directory / 'config.json'} is corrupt (not a table of settings)")
    return config


def load_weights(directory: str | Path, model: torch.nn.Module) -> None:
    """Load weights into a model built from the checkpoint's own config."""
    directory = verify(directory)
    if (directory / SHARDED).exists():
        raise CheckpointError(
            f"{directory} is a sharded checkpoint (train.parallel=fsdp); make a plain copy first: "
            f"tfmr checkpoint consolidate {directory} --out PLAIN"
        )
    try:
        missing, unexpected = load_model(model, str(directory / "model.safetensors"), strict=False)
    except (SafetensorError, RuntimeError) as e:
        raise CheckpointError(f"cannot read weights from {directory}: {e}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {directory} do not fit this model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def load_state(directory: str | Path) -> tuple[dict, dict]:
    """(tensors, plain) of the training state; the optimizer is under plain['optimizer']."""
    directory = verify(directory)
    if not (directory / "state.json").exists():
        raise CheckpointError(f"{directory} holds weights only; it has no training state to resume")
    try:
        tensors = load_file(str(directory / "state.safetensors"))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read the training state in {directory}: {e}") from None
    plain = _read_json(directory / "state.json")
    if not isinstance(plain, dict):
        raise CheckpointError(f"{directory / 'state.json'} is corrupt (not a table)")
    if "optimizer" in plain:
        plain["optimizer"] = _unflatten_optimizer(tensors, plain["optimizer"])
    return tensors, plain


WEIGHTS_ONLY = ("state.safetensors", "state.json", MANIFEST)  # what a weights-only copy leaves out


def _copy_files(source: Path, target: Path, skip: tuple[str, ...]) -> None:
    for path in source.iterdir():
        if path.name not in skip:
            shutil.copy2(path, target / path.name)


def snapshot(source: str | Path, directory: str | Path) -> Path:
    """Copy the weights, config and tokenizer of checkpoint `source` (not its training state) to
    `directory`, verified and atomically."""
    source, directory = verify(source), Path(directory)
    tmp = _fresh_tmp(directory)
    with _writing(tmp, directory):
        _copy_files(source, tmp, skip=WEIGHTS_ONLY)
        return _commit(tmp, directory)


def keep_snapshot(source: str | Path, root: str | Path, step: int, keep: int) -> Path:
    """Snapshot checkpoint `source` as `root/step-NNNNNNN` and delete all but the newest `keep`."""
    root = Path(root)
    path = snapshot(source, root / f"step-{step:07d}")
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def average(sources: list[str | Path], directory: str | Path, overwrite: bool = False) -> Path:
    """Write the element-wise mean of the weights of `sources` (checkpoints of one model: same
    config, same tensor names and shapes) to `directory`, with the first source's config and
    tokenizer. `directory` follows tfmr.folders: new, empty, or an earlier checkpoint with
    `overwrite`; never a source, a run's own checkpoint or a folder of other files."""
    if not sources:
        raise CheckpointError("nothing to average: give at least one checkpoint")
    dirs = [verify(s) for s in sources]
    model = read_config(dirs[0]).get("model")
    for d in dirs[1:]:
        if read_config(d).get("model") != model:
            raise CheckpointError(
                f"{d} holds a different model than {dirs[0]} (model configs differ); "
                "only checkpoints of one model can be averaged"
            )
    directory = check_output(directory, "checkpoint", overwrite=overwrite, sources=dirs)
    tmp = _fresh_tmp(directory)
    with _writing(tmp, directory):
        save_file(
            _mean_weights(dirs),
            str(tmp / "model.safetensors"),
            metadata={AVERAGED: json.dumps([_averaged_source(d) for d in dirs])},
        )
        _copy_files(dirs[0], tmp, skip=WEIGHTS_ONLY + ("model.safetensors",))
        return _commit(tmp, directory)


def saved_state(directory: str | Path) -> dict:
    """A training checkpoint's state.json (its step, seconds, history ...); {} for a folder without
    one (an export, an average of exports). A corrupt one is a CheckpointError, in one line."""
    state = Path(directory) / "state.json"
    return _read_json(state) if state.exists() else {}


def saved_step(directory: str | Path) -> int | None:
    """The step a training checkpoint was saved at; None for a folder without state.json."""
    return saved_state(directory).get("step")


def _averaged_source(directory: Path) -> dict:
    """One checkpoint of an average: its folder (with its parent's name) and its step."""
    return {
        "checkpoint": f"{directory.parent.name}/{directory.name}",
        "step": saved_step(directory),
    }


def averaged_from(directory: str | Path) -> list[dict] | None:
    """The checkpoints `directory` is the mean of ({"checkpoint", "step"} each), from its weights'
    metadata; None when it is not an average (or was written before averages recorded this)."""
    with safe_open(str(Path(directory) / "model.safetensors"), "pt") as f:
        found = (f.metadata() or {}).get(AVERAGED)
    try:
        sources = json.loads(found) if found else None
    except ValueError:
        return None
    ok = isinstance(sources, list) and all(isinstance(s, dict) for s in sources)
    return sources if ok else None


def export(
    directory: str | Path,
    model: torch.nn.Module,
    config: dict,
    tokenizer=None,
    dtype: torch.dtype = torch.float16,
    info: dict | None = None,
    overwrite: bool = False,
    sources: tuple = (),
    ensemble: dict | None = None,
) -> Path:
    """Write an inference-only copy of `model` to `directory`: its floating-point weights in
    `dtype` (tied matrices stored once, as in `save`), the config, the tokenizer and EXPORT_INFO
    (`info` plus the dtype), with the manifest, atomically; for a tfmr.ensemble.Ensemble also
    ENSEMBLE (`ensemble`: the members' configs, weights and combine; tfmr.loading reads it).
    `verify` and `load_weights` read it like any checkpoint; the weights are cast to the dtype of
    the model they are loaded into.

    `directory` follows tfmr.folders: new, empty, or an earlier export with `overwrite` (the write
    replaces the whole folder); a folder holding anything else, or `sources`, is refused."""
    directory = check_output(directory, "export", overwrite=overwrite, sources=sources)
    small = copy.deepcopy(model).to(
        dtype
    )  # only floating-point tensors change type; ties survive the copy
    tmp = _fresh_tmp(directory)
    with _writing(tmp, directory):
        write_weights(
            small, tmp / "model.safetensors", metadata={"dtype": str(dtype).replace("torch.", "")}
        )
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
        if tokenizer is not None:
            tokenizer.save(tmp)
        about = {"dtype": str(dtype).replace("torch.", ""), **(info or {})}
        (tmp / EXPORT_INFO).write_text(json.dumps(about, indent=2, ensure_ascii=False))
        if ensemble is not None:
            (tmp / ENSEMBLE).write_text(json.dumps(ensemble, indent=2, ensure_ascii=False))
        return _commit(tmp, directory)


def _mean_weights(dirs: list[Path]) -> dict:
    """Floating-point tensors averaged in float64 and stored in their own dtype; integer buffers
    taken from the first checkpoint."""
    first = load_file(str(dirs[0] / "model.safetensors"))
    total = {name: w.double() if w.is_floating_point() else w for name, w in first.items()}
    for d in dirs[1:]:
        weights = load_file(str(d / "model.safetensors"))
        if weights.keys() != first.keys():
            raise CheckpointError(f"{d} has other tensors than {dirs[0]}; cannot average them")
        for name, w in weights.items():
            if w.shape != first[name].shape:
                raise CheckpointError(
                    f"{name} is {tuple(w.shape)} in {d} but {tuple(first[name].shape)} in {dirs[0]}"
                )
            if w.is_floating_point():
                total[name] += w.double()
    return {
        name: (t / len(dirs)).to(first[name].dtype) if t.is_floating_point() else t
        for name, t in total.items()
    }
