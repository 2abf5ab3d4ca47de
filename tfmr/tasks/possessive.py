"""Possessives pronounced from the dictionary: `word's` and `words'` from the entry of `word` or
`words`, instead of from the model.

English writes the possessive as 's after the stem and says it as the plural -s is said: IH Z
after a sibilant (S Z SH ZH CH JH), S after another voiceless consonant (P T K F TH), Z after
anything else. CMUdict itself: the first entry of 416 of the 482 possessives of sibilant-final
stems ends in IH0 Z (45 in AH0 Z), and for 6,058 of its 6,309 possessives of a word it has, the
rule gives one of the entry's own pronunciations. A plural possessive (`parents'`) and a bare
trailing apostrophe sound as the word without it. On tfmr's test split this covers 329 of the
374 words with an apostrophe (with the train split as the dictionary), and the first composed
pronunciation of 307 of those 329 equals a reference; the misses are mostly stems whose vowels
CMUdict reduces differently in the possessive entry.

Not handled here: contractions ('ll, 'd, n't, 're, 've) and names with an apostrophe inside
(o'kelly, d'alessi); those go to the model like any other word.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SIBILANTS = frozenset({"S", "Z", "SH", "ZH", "CH", "JH"})
VOICELESS = frozenset({"P", "T", "K", "F", "TH"})

Pron = tuple[str, ...]


def suffix(last: str, stress: bool) -> Pron:
    """The possessive ending after a pronunciation ending in phoneme `last` (stress digits ignored)."""
    bare = last.rstrip("012")
    if bare in SIBILANTS:
        return ("IH0" if stress else "IH", "Z")
    return ("S",) if bare in VOICELESS else ("Z",)


def possessive(word: str, lexicon: Mapping[str, Sequence[Pron]]) -> list[Pron] | None:
    """The pronunciations of `word` (lower case) as the possessive of a word `lexicon` has, or
    None when it is not one."""
    if word.endswith("'s") and len(word) > 2 and word[:-2] in lexicon:
        prons = lexicon[word[:-2]]
        stress = any(p[-1:].isdigit() for pron in prons for p in pron)
        return _unique([tuple(p) + suffix(p[-1], stress) for p in prons if p])
    if word.endswith("'") and len(word) > 1 and word[:-1] in lexicon:  # parents' -> parents
        return _unique([tuple(p) for p in lexicon[word[:-1]]])
    return None


def _unique(prons: list[Pron]) -> list[Pron] | None:
    out = list(dict.fromkeys(prons))
    return out or None
