"""Text -> token ids on disk -> random training windows.

    read_text(path)       a file or a folder of text files, checked: empty, binary and
                          non-UTF-8 input get a clear error naming the file
    embedded_corpus()     the default corpus, needing no download: the Python reference
                          documentation that ships with every CPython (`pydoc_data`)
    prepare(cfg, dir)     train the tokenizer (or load the one at data.tokenizer.path), encode,
                          split train/val, store the ids as
                          memory-mapped arrays; cached, so a second run does not re-tokenize
    Batches               random (input, target) windows, nanoGPT style; its generator state
                          is the data position a checkpoint saves; under torchrun each process
                          keeps its own rows of the same draw

Sequence-to-sequence data (pairs, padding, length buckets) lives with the seq2seq tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, DataConfig, check_options, parse_json, to_dict
from .errors import DataError  # defined in errors.py (torch-free), re-exported here
from .tokenizers import TOKENIZERS
from .tokenizers import load as load_tokenizer


def default_cache_root() -> Path:
    """Where token ids are cached across runs: $TFMR_CACHE, else ~/.cache/tfmr/data."""
    env = os.environ.get("TFMR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tfmr" / "data"


def embedded_corpus() -> str:
    """Python's own reference documentation (about 0.5 MB of English), sorted by topic."""
    from pydoc_data import topics

    return "\n\n".join(topics.topics[name].strip() for name in sorted(topics.topics)) + "\n"


def _read_file(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise DataError(f"{path} looks binary (it has NUL bytes); give a UTF-8 text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text (bad byte at offset {e.start}); convert it first"
        ) from None


def read_text(path: str | Path | None) -> str:
    """The training text: a file, every file under a folder (sorted), or the embedded corpus."""
    if path is None:
        return embedded_corpus()
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path not found: {path}")
    files = (
        sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if path.is_dir()
        else [path]
    )
    if not files:
        raise DataError(f"no files under {path}")
    text = "\n".join(_read_file(f) for f in files)
    if not text.strip():
        raise DataError(f"{path} is empty: there is no text to train on")
    return text


def given_tokenizer(choice):
    """The tokenizer named by `data.tokenizer.path` (a folder holding tokenizer.json, or the file: one
    written by `tfmr tokenizer train` or a Hugging Face tokenizer.json), or None when no path is set.
    It is used as is: the kind and any other option would be ignored, so they are refused."""
    path = choice.options.get("path")
    if path is None:
        return None
    others = sorted(set(choice.options) - {"path"})
    if others:
        raise ConfigError(
            f"data.tokenizer.path uses a saved tokenizer as is; drop the options {others}"
        )
    path = Path(path)
    folder = path.parent if path.is_file() and path.name == "tokenizer.json" else path
    if path.is_file() and path.name != "tokenizer.json":
        raise DataError(
            f"data.tokenizer.path {path}: give the folder holding tokenizer.json, or that file"
        )
    try:
        return load_tokenizer(folder)
    except ValueError as e:
        raise DataError(f"data.tokenizer.path: {e}") from None


def train_tokenizer(choice, text: str):
    """Build the tokenizer named by the data config (char, or bpe with a vocab size)."""
    check_options(choice, TOKENIZERS, "data.tokenizer", fixed=("text", "progress"), method="train")
    cls = TOKENIZERS[choice.kind]
    return cls.train(text, **choice.options)


@dataclass
class Prepared:
    train: np.ndarray  # token ids (in memory, or memory-mapped when large)
    val: np.ndarray
    tokenizer: object
    directory: Path


def _cache_key(text: str, cfg: DataConfig, tokenizer=None) -> str:
    h = hashlib.sha256(text.encode("utf-8"))
    h.update(json.dumps([to_dict(cfg.tokenizer), cfg.val_fraction], sort_keys=True).encode())
    if tokenizer is not None:  # a given tokenizer (fine-tuning): its saved form is its identity
        with tempfile.TemporaryDirectory() as tmp:
            h.update(Path(tokenizer.save(tmp)).read_bytes())
    return h.hexdigest()[:16]


def _write_ids(path: Path, ids: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp")
    ids.tofile(tmp)
    os.replace(tmp, path)


def prepare(cfg: DataConfig, cache_root: str | Path, log=print, tokenizer=None) -> Prepared:
    """Tokenize the configured text once and keep the ids on disk (read back, after a check of
    their size, into memory; memory-mapped past IN_MEMORY bytes).
    With `tokenizer` (fine-tuning a checkpoint), or one saved at `data.tokenizer.path`, the text is
    encoded with it and none is trained."""
    text = read_text(cfg.path)
    tokenizer = tokenizer if tokenizer is not None else given_tokenizer(cfg.tokenizer)
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1, got {cfg.val_fraction}")
    directory = Path(cache_root) / _cache_key(text, cfg, tokenizer)
    meta = _cached(directory, log)
    if meta is None:
        try:
            meta = _encode_into(directory, text, cfg, tokenizer, log)
        except OSError as e:  # a read-only or full disk under TFMR_CACHE
            raise DataError(
                f"cannot write the token cache {directory}: {e.strerror or e}; set TFMR_CACHE or "
                "data.cache_dir to a writable folder"
            ) from None
    dtype = np.dtype(meta["dtype"])
    train, val = (_read_ids(directory / f"{split}.bin", dtype) for split in ("train", "val"))
    return Prepared(train, val, load_tokenizer(directory), directory)


IN_MEMORY = (
    2 << 30
)  # id files up to this size are read into memory (a file truncated mid-run cannot then
# end the run with SIGBUS); larger ones are memory-mapped


def _read_ids(path: Path, dtype: np.dtype) -> np.ndarray:
    if path.stat().st_size <= IN_MEMORY:
        return np.fromfile(path, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _cached(directory: Path, log) -> dict | None:
    """The cache's meta.json when the cache is complete: its id files hold as many tokens as it
    says (a truncated or edited cache is tokenized again, with a note); None otherwise."""
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = parse_json(meta_path.read_bytes(), str(meta_path))
        dtype = np.dtype(meta["dtype"])
        sizes = {split: (directory / f"{split}.bin").stat().st_size for split in ("train", "val")}
        complete = all(sizes[s] == meta[f"{s}_tokens"] * dtype.itemsize for s in sizes)
    except (ConfigError, OSError, KeyError, TypeError, ValueError):
        complete = False
    if not complete:
        log(f"note: the token cache in {directory} is incomplete or damaged; tokenizing again")
        meta_path.unlink(missing_ok=True)
        return None
    log(
        f"data: cached ids in {directory} ({meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens)"
    )
    return meta


def _encode_into(directory: Path, text: str, cfg: DataConfig, tokenizer, log) -> dict:
    """Tokenize `text` and write the cache: train.bin, val.bin, the tokenizer, meta.json last."""
    directory.mkdir(parents=True, exist_ok=True)
    log(
        f"data: {len(text):,} characters; {'encoding with the given' if tokenizer else 'training the'} "
        f"{tokenizer.kind if tokenizer else cfg.tokenizer.kind} tokenizer ..."
    )
    tok = tokenizer if tokenizer is not None else train_tokenizer(cfg.tokenizer, text)
    try:
        ids = np.asarray(
            tok.encode(text), dtype=np.uint16 if tok.vocab_size <= 65536 else np.uint32
        )
    except ValueError as e:  # a given tokenizer that cannot encode this text (unknown characters)
        raise DataError(f"{cfg.path}: {e}") from None
    n_val = max(1, int(len(ids) * cfg.val_fraction))
    if len(ids) - n_val < 2:
        raise DataError(f"the text is too short to train on ({len(ids)} tokens)")
    _write_ids(directory / "train.bin", ids[:-n_val])
    _write_ids(directory / "val.bin", ids[-n_val:])
    tok.save(directory)
    meta = {
        "dtype": str(ids.dtype),
        "train_tokens": len(ids) - n_val,
        "val_tokens": n_val,
        "vocab_size": tok.vocab_size,
        "characters": len(text),
    }
    (directory / "meta.json").write_text(
        json.dumps(meta, indent=2)
    )  # written last: marks the cache complete
    log(
        f"data: {meta['train_tokens']:,} train / {n_val:,} val tokens, vocab {tok.vocab_size}, cached in {directory}"
    )
    return meta


class Batches:
    """Random windows of `context + 1` tokens from a 1-D id array: (inputs, targets) shifted by one."""

    def __init__(
        self, ids: np.ndarray, context: int, batch_size: int, seed: int, rows: slice | None = None
    ):
        if len(ids) < 2:
            raise DataError("not enough tokens to form a single training window")
        self.ids = ids
        self.context = min(context, len(ids) - 1)
        self.batch_size = batch_size
        self.rows = rows or slice(None)  # a process's share of the batch (torchrun: tfmr.parallel)
        self.gen = torch.Generator().manual_seed(seed)

    def next(self, device: str | torch.device = "cpu"):
        """The next (inputs, targets): `batch_size` windows drawn, the rows `self.rows` kept."""
        starts = torch.randint(
            len(self.ids) - self.context, (self.batch_size,), generator=self.gen
        )[self.rows]
        rows = np.stack([self.ids[s : s + self.context + 1] for s in starts.tolist()]).astype(
            np.int64
        )
        block = torch.from_numpy(rows)  # (B, context + 1)
        x, y = block[:, :-1].contiguous(), block[:, 1:].contiguous()  # (B, context) each
        if torch.device(device).type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(
                device, non_blocking=True
            )
        return x.to(device), y.to(device)

    def state(self) -> torch.Tensor:
        return self.gen.get_state()

    def load_state(self, state: torch.Tensor) -> None:
        self.gen.set_state(state)
