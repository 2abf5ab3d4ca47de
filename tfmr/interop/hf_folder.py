"""Load a Hugging Face model folder (config.json + safetensors + tokenizer.json) without `transformers`.

    from tfmr import from_pretrained
    model, tokenizer = from_pretrained("path/to/folder")        # Loaded(model, tokenizer, model_type)

What a folder may hold, and what is read:

    config.json                          `model_type` picks the family mapper in FAMILIES; the rest
                                         is that family's settings (missing keys take the family's
                                         transformers defaults, HF_DEFAULTS in each family module)
    model.safetensors                    the weights, or
    model.safetensors.index.json         + model-0000i-of-0000n.safetensors (sharded)
    pytorch_model.bin                    a pickle: refused unless allow_pickle=True, then read with
                                         torch.load(weights_only=True) (tensors only, no code)
    tokenizer.json                       tfmr.tokenizers.hf.from_hf_json (tfmr's BPE where exact)
    generation_config.json               decoder start, end and forced end token ids, over config.json's
                                         (`generation_ids`, for encoder-decoder generation)

Every way a folder can be wrong (no config.json, an unmapped model_type, a pickle-only folder, a
truncated shard, a missing tensor, a tensor whose shape the config does not imply) is a one-line
ConfigError. Left out: remote downloads (pass a local folder), quantized weights, adapters.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import torch

from ..builder import build_uninitialised, validate
from ..config import ConfigError, check_types, parse_json
from ..memory import check_inference
from . import bert, bloom, gpt2, llama, marian

FAMILIES = {
    "gpt2": gpt2,
    "bloom": bloom,
    "llama": llama,
    "mistral": llama,
    "mixtral": llama,
    "bert": bert,
    "marian": marian,
}
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"


class Loaded(NamedTuple):
    model: torch.nn.Module
    tokenizer: object  # None when the folder has no tokenizer.json
    model_type: str


def _read_json(path: Path):
    try:
        return parse_json(path.read_bytes(), "")
    except OSError as e:
        raise ConfigError(f"{path}: not readable JSON ({e})") from None
    except ConfigError as e:  # invalid, nested too deep, a 5,000-digit number
        raise ConfigError(f"{path}: not readable JSON ({e})") from None


def _shards(directory: Path) -> list[str]:
    """The weight files the index names: plain file names inside the folder (an index naming
    `../x.safetensors` or an absolute path is refused, never read)."""
    index = _read_json(directory / INDEX)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConfigError(f"{directory / INDEX}: no weight_map")
    shards = sorted(set(weight_map.values()), key=str)
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard or shard in (".", ".."):
            raise ConfigError(
                f"{directory / INDEX} names the weight file {shard!r}, which is not a file of "
                f"{directory}; refusing to read it"
            )
    return shards


def read_hf_config(directory) -> dict:
    """config.json of a Hugging Face folder as a dict (ConfigError: no file, or no model_type)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{directory}: no config.json; not a Hugging Face model folder")
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ConfigError(f"{path}: no model_type; not a Hugging Face model config")
    return data


def is_hf_folder(directory) -> bool:
    """A folder whose config.json names a Hugging Face model_type (tfmr's own config.json does not)."""
    try:
        read_hf_config(directory)
        return True
    except ConfigError:
        return False


def family(model_type: str):
    if model_type not in FAMILIES:
        raise ConfigError(
            f"no tfmr mapping for Hugging Face model_type {model_type!r}; "
            f"supported: {', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]


def config_namespace(data: dict):
    """config.json as attributes (what the family mappers read), over the family's defaults."""
    fam = family(data["model_type"])
    aliases = getattr(fam, "HF_ALIASES", {})
    named = {
        aliases.get(k, k): v
        for k, v in data.items()
        if aliases.get(k, k) not in data or k not in aliases
    }
    return SimpleNamespace(**{**fam.HF_DEFAULTS[data["model_type"]], **named})


def _load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"{path}: weight file missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(
            f"{path}: not a complete safetensors file ({str(e).splitlines()[0]})"
        ) from None


def read_state_dict(directory, allow_pickle: bool = False) -> dict:
    """All weight tensors of the folder, by their Hugging Face names."""
    directory = Path(directory)
    if (directory / INDEX).is_file():
        state = {}
        for shard in _shards(directory):
            state.update(_load_safetensors(directory / shard))
        missing = sorted(set(_read_json(directory / INDEX)["weight_map"]) - set(state))
        if missing:
            raise ConfigError(
                f"{directory}: tensors listed in {INDEX} are in no shard, e.g. {missing[0]}"
            )
        return state
    if (directory / WEIGHTS).is_file():
        return _load_safetensors(directory / WEIGHTS)
    if (directory / PICKLE).is_file():
        if not allow_pickle:
            raise ConfigError(
                f"{directory} has only {PICKLE} (a pickle, which can run code when loaded); "
                "convert it to safetensors, or pass --allow-pickle to read it tensors-only"
            )
        try:
            return torch.load(directory / PICKLE, map_location="cpu", weights_only=True)
        except (
            Exception
        ) as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... for a bad file
            raise ConfigError(
                f"{directory / PICKLE}: not loadable as tensors only ({str(e).splitlines()[0]})"
            ) from None
    raise ConfigError(f"{directory}: no weights ({WEIGHTS}, {INDEX} or {PICKLE})")


def weight_files(directory) -> list[Path]:
    """The files `read_state_dict` reads: the index and its shards, model.safetensors or the pickle."""
    directory = Path(directory)
    if (directory / INDEX).is_file():
        return [directory / INDEX, *(directory / shard for shard in _shards(directory))]
    for name in (WEIGHTS, PICKLE):
        if (directory / name).is_file():
            return [directory / name]
    raise ConfigError(f"{directory}: no weights ({WEIGHTS}, {INDEX} or {PICKLE})")


def weights_digest(directory) -> str:
    """One sha256 over the folder's weight files (each file's name and sha256, in order): what
    LoRA weights fine-tuned from the folder record, so that loading them checks the base."""
    whole = hashlib.sha256()
    for path in weight_files(directory):
        one = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    one.update(chunk)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
        whole.update(f"{path.name}\0{one.hexdigest()}\n".encode())
    return whole.hexdigest()


def _check_shapes(model: torch.nn.Module, state: dict, where) -> None:
    expected = model.state_dict()
    for name, tensor in state.items():
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
            raise ConfigError(
                f"{where}: weights do not match config.json: {name} has shape {tuple(tensor.shape)}, "
                f"the config implies {tuple(expected[name].shape)}"
            )


def _load_in_place(model: torch.nn.Module, state: dict):
    """load_state_dict(assign=True): the read tensors become the parameters, without a copy (the
    file's memory map stays their storage until a write; a transposed matrix stays a transposed
    view, q, k and v split from a fused matrix stay slices of it: checkpoint.write_weights packs
    them when saving). Parameters shared under several names (tied embeddings, as the builder ties
    them) are shared again, so a name filled through its tie is not missing. (missing, unexpected)."""
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = set()
    for names in (g for g in groups.values() if len(g) > 1):
        loaded = [n for n in names if n in state]
        if loaded:
            for name in names:
                owner, _, leaf = name.rpartition(".")
                setattr(model.get_submodule(owner), leaf, model.get_parameter(loaded[0]))
            tied.update(names)
    return sorted(set(missing) - tied), unexpected


class _Tracked(dict):
    """A state dict that remembers which tensors a family's mapping read."""

    def __init__(self, data: dict):
        super().__init__(data)
        self.read: set = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def pop(self, key, *default):
        self.read.add(key)
        return super().pop(key, *default)


def _check_unread(state: _Tracked, cfg, where) -> None:
    """Weights of layers past the config's count (a config claiming fewer layers than its weights
    hold) are refused rather than silently left out."""
    deepest = max(cfg.layers, cfg.encoder_layers or 0)
    for name in sorted(set(state) - state.read):
        number = re.search(r"\.(\d+)\.", f".{name}")
        if number and int(number.group(1)) >= deepest:
            raise ConfigError(
                f"{where}: the weights hold {name}, past the {deepest} layers config.json "
                "describes; the config does not match its weights"
            )


def model_config(model_type: str, hf_config, where="the model"):
    """The ModelConfig a family makes of a Hugging Face config (attributes), checked before anything
    is built: types (`n_embd: "32"`, `n_layer: 2.5`), ranges (a negative `rope_theta` or
    `rms_norm_eps`), and the memory its weights need (`n_embd: 1e9`). ConfigError naming `where`."""
    try:
        cfg = family(model_type).config_from_hf(hf_config)
        check_types(cfg, "model")
        validate(cfg)
    except (
        ValueError,
        AttributeError,
        TypeError,
        OverflowError,
    ) as e:  # ConfigError is a ValueError
        raise ConfigError(
            f"{where}: config.json does not describe a model tfmr can build: {e}"
        ) from None
    try:
        check_inference(cfg)  # refused before the allocator is asked
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def model_from_hf_state(
    model_type: str, hf_config, hf_state: dict, where="the model"
) -> torch.nn.Module:
    """A tfmr model from a family's config (attributes) and Hugging Face state dict, weights loaded."""
    fam = family(model_type)
    cfg = model_config(model_type, hf_config, where)
    model = build_uninitialised(cfg)  # every parameter is loaded below, or the load is refused
    read = _Tracked(hf_state)
    try:
        state = fam.state_dict_from_hf(read, cfg)
    except KeyError as e:
        raise ConfigError(
            f"{where}: weight {e.args[0]} is missing (config.json says {cfg.layers} layers)"
        ) from None
    except (
        RuntimeError,
        ValueError,
    ) as e:  # a fused matrix that cannot be split as the config says
        raise ConfigError(
            f"{where}: weights do not match config.json ({str(e).splitlines()[0]})"
        ) from None
    _check_unread(read, cfg, where)
    _check_shapes(model, state, where)
    missing, unexpected = _load_in_place(model, state)
    if missing or unexpected:
        raise ConfigError(
            f"{where}: weight mapping for {model_type} is incomplete: missing "
            f"{missing[:3]}, unexpected {sorted(unexpected)[:3]}"
        )
    return model.eval()


class GenerationIds(NamedTuple):
    decoder_start: int | None  # the first decoder input of an encoder-decoder (Marian: the pad id)
    eos: int | None  # generation stops after this token
    forced_eos: (
        int | None
    )  # the token forced at the length limit (transformers' forced_eos_token_id)


def generation_ids(directory) -> GenerationIds:
    """The token ids `generate` starts and stops with: generation_config.json over config.json over
    the family's defaults. A list of end ids keeps its first."""
    directory = Path(directory)
    data = vars(config_namespace(read_hf_config(directory)))
    if (directory / "generation_config.json").is_file():
        extra = _read_json(directory / "generation_config.json")
        data.update(extra if isinstance(extra, dict) else {})

    def one(key):
        value = data.get(key)
        value = value[0] if isinstance(value, list) and value else value
        if value is not None and not isinstance(value, int):
            raise ConfigError(f"{directory}: {key} is {value!r}, not a token id")
        return value

    return GenerationIds(
        one("decoder_start_token_id"), one("eos_token_id"), one("forced_eos_token_id")
    )


def load_hf_tokenizer(directory):
    """The folder's tokenizer.json as a tfmr tokenizer, or None when there is none."""
    from ..tokenizers.hf import from_hf_json

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        return from_hf_json(_read_json(path))
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None


def from_pretrained(
    directory, allow_pickle: bool = False, dtype: torch.dtype | None = None
) -> Loaded:
    """(model, tokenizer, model_type) from a local Hugging Face folder; weights in their stored
    floating type unless `dtype` is given."""
    directory = Path(directory)
    data = read_hf_config(directory)
    model_type = data["model_type"]
    family(model_type)
    hf_state = read_state_dict(directory, allow_pickle)
    model = model_from_hf_state(model_type, config_namespace(data), hf_state, where=directory)
    stored = next((t.dtype for t in hf_state.values() if t.is_floating_point()), torch.float32)
    return Loaded(model.to(dtype or stored), load_hf_tokenizer(directory), model_type)
