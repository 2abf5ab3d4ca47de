"""Vocabularies of sequence-to-sequence tasks: symbols <-> ids on each side of a pair, saved as
vocab.json. Torch-free, so the loader (loading.py) reads them without the training code.

    Vocab       symbols <-> ids, with <pad>=0, <s>=1, </s>=2, <unk>=3 first
    PairVocab   a task's source and target Vocab, saved together as vocab.json

tfmr.seq2seq re-exports every name here (where they lived before).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = 0, 1, 2, 3


class Vocab:
    """Symbols <-> ids. The four specials come first, then the symbols in the order given."""

    def __init__(self, symbols: Sequence[str]):
        symbols = list(symbols)
        if set(symbols) & set(SPECIALS) or len(set(symbols)) != len(symbols):
            raise ValueError("Vocab symbols must be distinct and must not be special tokens")
        self.itos = list(SPECIALS) + symbols
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    @classmethod
    def build(cls, sequences) -> Vocab:
        """Every symbol of `sequences`, sorted (the same data always gives the same ids)."""
        return cls(sorted({s for seq in sequences for s in seq}))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, seq: Sequence[str]) -> list[int]:
        return [self.stoi.get(s, UNK) for s in seq]

    def decode(self, ids) -> list[str]:
        """Symbols up to the first </s>, without <pad> and <s>."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.itos[i] if i < len(self.itos) else SPECIALS[UNK])
        return out


class PairVocab:
    """The source and the target vocabulary of a task, saved together as vocab.json."""

    kind = "pair"

    def __init__(self, src: Vocab, tgt: Vocab):
        self.src, self.tgt = src, tgt

    def same_symbols(self, other: PairVocab) -> bool:
        """Whether `other` gives every source and target symbol the same id (models that can
        ensemble, or teach one another)."""
        return (self.src.itos, self.tgt.itos) == (other.src.itos, other.tgt.itos)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / "vocab.json"
        data = {
            "kind": self.kind,
            "src": self.src.itos[len(SPECIALS) :],
            "tgt": self.tgt.itos[len(SPECIALS) :],
        }
        path.write_text(json.dumps(data, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PairVocab:
        path = Path(directory) / "vocab.json"
        if not path.exists():
            raise FileNotFoundError(
                f"no vocab.json in {directory}: not a sequence-to-sequence checkpoint"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(Vocab(data["src"]), Vocab(data["tgt"]))
