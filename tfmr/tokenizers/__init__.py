"""Tokenizers: text <-> token ids.

Every tokenizer has `kind`, `vocab_size`, `encode(text) -> list[int]`, `decode(ids) -> str`,
`token_bytes(id) -> bytes` (a token's bytes of UTF-8 text),
`save(directory)` (writes `tokenizer.json`, a readable file with a "kind" key) and
`from_dict(data)`. `load(directory)` reads any of them back; a checkpoint carries its tokenizer.
A Hugging Face `tokenizer.json` (no "kind", a "model" entry) loads too, through `hf.from_hf_json`:
tfmr's own BPE where that is exact, else the `tokenizers` library (kind "hf").
A file that is not a tokenizer description (any bytes at all) is a ValueError naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from .char import CharTokenizer
from .hf import HFTokenizer, from_hf_json

TOKENIZERS = {"char": CharTokenizer, "hf": HFTokenizer}

try:  # byte-level BPE (its own module; registered when present)
    from .bpe import BPE  # noqa: F401

    TOKENIZERS["bpe"] = BPE
except ImportError:  # pragma: no cover - only while bpe.py is being written
    pass


def load(directory: str | Path):
    """Load the tokenizer saved in `directory/tokenizer.json`."""
    path = Path(directory) / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer.json in {directory}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        kind = (
            None
            if isinstance(data, dict) and "kind" not in data and "model" in data
            else data["kind"]
        )
    except (
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        RecursionError,
    ) as e:  # not UTF-8 / JSON / a table
        raise ValueError(f"{path} is not a valid tokenizer file: {e}") from None
    if kind is None:  # a Hugging Face tokenizer.json
        return from_hf_json(data)
    if not isinstance(kind, str) or kind not in TOKENIZERS:
        raise ValueError(f"{path}: unknown tokenizer kind {kind!r}; valid: {sorted(TOKENIZERS)}")
    try:
        return TOKENIZERS[kind].from_dict(data)
    except ValueError as e:
        raise ValueError(f"{path} is not a valid tokenizer file: {e}") from None
