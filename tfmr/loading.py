"""One loader for every saved model: `tfmr.load(path)`.

    loaded = tfmr.load("runs/g2p/checkpoint")       # LoadedModel(model, vocab, config, kind, path)
    loaded = tfmr.load(path, expect=RunConfig)      # another command's checkpoint is refused, named

What the folder holds (tfmr.folders.classify, the classifier of the write policy) picks the reader:

    run          the run's checkpoint (RUN/checkpoint, or checkpoint.old after a cut-short save)
    checkpoint   a tfmr checkpoint, every file checked against its sha256 manifest first; the model
    export       is built from the saved config without random weights and every weight is loaded
                 (a quantized one as its int8 / bf16 layers, an fp16 export into an fp32 model;
                 an exported ensemble, ensemble.json beside config.json, as a tfmr.ensemble.Ensemble
                 of its members, `config` the first member's)
    hf           a Hugging Face model folder (config.json with a model_type; tfmr.interop)

and anything else is one line that names what the folder holds. A folder cut short while it was
saved falls back to its `.old` twin (tfmr.checkpoint.resolve).

`vocab` is what the model reads and writes: its tokenizer (tokenizer.json) or, for a
sequence-to-sequence checkpoint, its PairVocab (vocab.json). `config` is the saved run config read
as `expect` when it is given. Without it a language model's is a RunConfig; a pair checkpoint's is
the config class a task registered (tfmr.presets.KINDS) when it is the only one the saved
sections read as (G2P's, with its `data` section), else a config.Seq2SeqConfig of its model,
train and decode sections (a checkpoint does not say which task wrote it). A Hugging Face
folder's config is a RunConfig holding its model.

Left out: fine-tuning runs (adaptation.safetensors, read by tfmr/tasks/finetune.py), sharded
checkpoints (`tfmr checkpoint consolidate` makes a plain copy), remote downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoint, presets
from .builder import build_uninitialised
from .checkpoint import CheckpointError
from .config import ConfigError, RunConfig, Seq2SeqConfig, from_dict
from .folders import classify, describe
from .interop import from_pretrained
from .quantize import prepare_, saved_weights
from .tokenizers import load as load_tokenizer
from .vocab import PairVocab

PAIR_SECTIONS = (
    "model",
    "train",
    "decode",
)  # what Seq2SeqConfig reads of an unregistered task's config


@dataclass
class LoadedModel:
    """A saved model, ready to run, and what it came from."""

    model: torch.nn.Module  # in eval mode
    vocab: object  # a tokenizer (tfmr.tokenizers), or a vocab.PairVocab
    config: object  # the run config (see the module docstring)
    kind: str  # what the folder was: run | checkpoint | export | hf
    path: Path  # the folder the weights were read from (a run's checkpoint folder, a `.old` twin)
    model_type: str = ""  # a Hugging Face folder's model_type


def load(
    path: str | Path,
    expect: type | None = None,
    *,
    runs: bool = True,
    allow_pickle: bool = False,
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """The model saved in the folder `path`: a run, a checkpoint, an export or a Hugging Face folder.

    `expect`: the run config class the caller reads (RunConfig, a task's); a checkpoint of another
    kind is a CheckpointError naming its kind and its commands. `runs=False` refuses a run folder,
    pointing at its checkpoint (for a flag that names a checkpoint). `allow_pickle` and `dtype`
    are for a Hugging Face folder (a pytorch_model.bin read with weights_only; the float type)."""
    path = Path(path)
    kind = classify(path)
    if kind == "hf":
        return _hf_folder(path, expect, allow_pickle, dtype)
    if kind == "run" and not runs:
        raise CheckpointError(f"{path} is a run folder; its checkpoint is {path / 'checkpoint'}")
    if kind not in ("run", "checkpoint", "export") and not _cut_short(path):
        found = "nothing is there" if kind == "missing" else describe(path, kind)
        raise CheckpointError(
            f"no checkpoint at {path}: {found}, not a complete checkpoint, an export, a run or "
            "a Hugging Face folder"
        )
    directory = checkpoint.verify(path / "checkpoint" if kind == "run" else path)
    return _checkpoint(directory, kind if kind == "run" else classify(directory), expect)


def _cut_short(path: Path) -> bool:
    """A save cut short before its swap: the previous checkpoint is the `.old` twin."""
    return (path.with_name(path.name + ".old") / checkpoint.MANIFEST).is_file()


def _checkpoint(directory: Path, kind: str, expect: type | None) -> LoadedModel:
    pairs = (directory / "vocab.json").is_file() and not (directory / "tokenizer.json").is_file()
    config = _config(directory, expect, pairs)
    ensemble = checkpoint.read_ensemble(directory)
    model = _built(config) if ensemble is None else _ensemble(ensemble, type(config), directory)
    checkpoint.load_weights(directory, model)
    return LoadedModel(
        model.eval(),
        PairVocab.load(directory) if pairs else _tokenizer(directory),
        config,
        kind,
        directory,
    )


def _built(config):
    """The model of `config`, uninitialised (every weight is loaded next, or CheckpointError); a
    quantized checkpoint (tfmr checkpoint quantize) gets its int8 / bf16 layers."""
    model = build_uninitialised(config.model)
    prepare_(model, saved_weights(config))
    return model


def _ensemble(saved: dict, cls: type, directory: Path):
    """An exported ensemble (checkpoint.ENSEMBLE): each member built from its config read as
    `cls` (the class config.json, the first member's, read as), in one Ensemble."""
    from .ensemble import Ensemble

    try:
        members = [_built(from_dict(cls, member)) for member in saved["members"]]
        return Ensemble(members, saved.get("weights"), saved.get("combine", "prob"))
    except (ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"{directory / checkpoint.ENSEMBLE}: {e}") from None


def _config(directory: Path, expect: type | None, pairs: bool):
    """The saved run config, typed (see the module docstring)."""
    if expect is not None or not pairs:
        return presets.read_run_config(directory, expect or RunConfig)
    data = checkpoint.read_config(directory)
    fitting = presets.kinds_of(data, but=RunConfig)
    if len(fitting) == 1:
        return from_dict(fitting[0], data)
    return from_dict(Seq2SeqConfig, {k: v for k, v in data.items() if k in PAIR_SECTIONS})


def _tokenizer(directory: Path):
    try:
        return load_tokenizer(directory)
    except ValueError as e:
        raise CheckpointError(f"{directory}: {e}") from None


def _hf_folder(
    path: Path, expect: type | None, allow_pickle: bool, dtype: torch.dtype | None
) -> LoadedModel:
    if expect not in (None, RunConfig):
        mine = presets.KINDS.get(expect, (expect.__name__, ""))[0]
        raise CheckpointError(
            f"{path} is a Hugging Face model folder; this command reads {mine} checkpoints"
        )
    model, tokenizer, model_type = from_pretrained(path, allow_pickle=allow_pickle, dtype=dtype)
    if tokenizer is None:
        raise ConfigError(
            f"{path}: no tokenizer.json beside the model (tfmr needs one to read text)"
        )
    return LoadedModel(model.eval(), tokenizer, RunConfig(model=model.cfg), "hf", path, model_type)
