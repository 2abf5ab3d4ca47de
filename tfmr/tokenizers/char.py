"""Character-level tokenizer: one id per distinct character of the training text.

The simplest tokenizer there is (nanoGPT's shakespeare-char uses it). Ids are the sorted
characters of the corpus, so the same text always gives the same vocabulary. Byte-level BPE lives
in `bpe.py`; both follow the small protocol in `tokenizers/__init__.py`.
"""

from __future__ import annotations

import json
from pathlib import Path


class CharTokenizer:
    """Maps each character seen at training time to an id (sorted by code point)."""

    kind = "char"

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: characters must be distinct")
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        if not text:
            raise ValueError("CharTokenizer.train: the text is empty")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """One id per character; a character the training text lacked is a ValueError naming
        every such character (a char tokenizer has no unknown token)."""
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            unknown = sorted({c for c in text if c not in self.stoi})
            raise ValueError(
                f"characters not in this tokenizer's vocabulary: {unknown!r} "
                f"(it knows {self.vocab_size} characters from its training text)"
            ) from e

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def token_bytes(self, idx: int) -> bytes:
        """The UTF-8 bytes of token `idx` (as BPE.token_bytes: where each token starts and ends in the text)."""
        if not isinstance(idx, int) or not 0 <= idx < self.vocab_size:
            raise ValueError(f"unknown token id {idx!r} (vocab_size {self.vocab_size})")
        return self.chars[idx].encode("utf-8")

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / "tokenizer.json"
        path.write_text(json.dumps({"kind": self.kind, "chars": self.chars}, ensure_ascii=False))
        return path

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        chars = data.get("chars") if isinstance(data, dict) else None
        if not isinstance(chars, list) or not all(
            isinstance(c, str) and len(c) == 1 for c in chars
        ):
            raise ValueError("a char tokenizer's 'chars' must be a list of single characters")
        return cls(chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
