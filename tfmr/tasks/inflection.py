"""Inflected forms of dictionary words (plurals, -ed, -ing, -ness) composed from the stem's
entry, and kept where the G2P model finds them about as likely as its own guess.

A word the dictionary lacks is often a regular form of one it has: `podcasts`, `hashtags`,
`bingeing`, `transformering`. The stem's entry says how the stem sounds; the ending follows English's
rules: the plural -s as the possessive's (tasks/possessive.py: IH Z after a sibilant, S after
another voiceless consonant, Z otherwise), the past -ed as T after a voiceless consonant, IH D
after T or D, D otherwise; -ing IH NG; -ness N AH S. The spellings undo English's: a dropped
final e (making <- make), a doubled consonant (stopped <- stop), y -> i (carried <- carry).

A rule is only a candidate: `wicked` is not `wick` + -ed, and a stem's vowel may move.
`choose` asks the model: every candidate is scored (its mean log-probability per phoneme,
teacher-forced) and the best replaces the model's own output when it scores at least that
output's score minus MARGIN. MARGIN was chosen on tfmr's dev split (the shipped model, beam 5,
the train split as the dictionary): 1,065 of its 6,265 words have a candidate, and at 0.7 the
composed ones turned 132 wrong outputs right and 21 right ones wrong (WER 28.54% -> 26.77%,
stress left out); 0.5 gave 26.94%, 1.0 and above 26.77% and 26.72% (docs/g2p.md, "Inflections").
CMUdict itself: for 93% of its 23,956 words that have a candidate (the stem is in CMUdict
too), a candidate is one of the word's own pronunciations (-s 93%, -ed 94%, -ing 94%, -ness
78%). The agentive or comparative -er, -ly and -ism/-ist were tried and left out: on the dev
split they gained a few words at small margins and lost more at large ones (`paper` is not
`pap` + -er).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .possessive import Pron
from .possessive import suffix as plural_ending

MARGIN = 0.7  # how far below the model's own output a composed candidate may score and still win
MIN_STEM = 3  # letters a stem needs (is -> i + s is no plural)
SIBILANT_SPELLINGS = ("s", "x", "z", "ch", "sh")
VOICELESS_PAST = frozenset({"P", "K", "F", "TH", "S", "SH", "CH"})


@dataclass(frozen=True)
class Candidate:
    """One composed pronunciation: the ending's name, the dictionary stem and the phonemes."""

    ending: str
    stem: str
    phones: Pron


def _unstressed(vowel: str, stress: bool) -> str:
    return vowel + "0" if stress else vowel


def _bare(phone: str) -> str:
    return phone.rstrip("012")


def plural(pron: Pron, stress: bool) -> Pron:
    return pron + plural_ending(pron[-1], stress)


def past(pron: Pron, stress: bool) -> Pron:
    last = _bare(pron[-1])
    if last in ("T", "D"):
        return pron + (_unstressed("IH", stress), "D")
    return pron + (("T",) if last in VOICELESS_PAST else ("D",))


def ing(pron: Pron, stress: bool) -> Pron:
    return pron + (_unstressed("IH", stress), "NG")


def ness(pron: Pron, stress: bool) -> Pron:
    return pron + ("N", _unstressed("AH", stress), "S")


def _stems_es(word: str) -> list[str]:
    """boxes <- box, heroes <- hero, carries <- carry."""
    stem = word[:-2]
    out = [stem] if stem.endswith(SIBILANT_SPELLINGS + ("o",)) else []
    return out + ([word[:-3] + "y"] if word.endswith("ies") else [])


def _stems_s(word: str) -> list[str]:
    stem = word[:-1]
    return [] if stem.endswith(SIBILANT_SPELLINGS) else [stem]


def _stems_vowel_ending(word: str, letters: int) -> list[str]:
    """baked <- bake, making <- make, stopped <- stop, carried <- carry (for -ed and -ing)."""
    stem = word[:-letters]
    out = [stem, stem + "e"]
    if len(stem) > 1 and stem[-1] == stem[-2] and stem[-1] not in "aeiouy":
        out.append(stem[:-1])
    if stem.endswith("i"):
        out.append(stem[:-1] + "y")
    return out


def _stems_ness(word: str) -> list[str]:
    stem = word[:-4]
    return [stem] + ([stem[:-1] + "y"] if stem.endswith("i") else [])


# (the ending as spelled, its name, the stems it may come from, how the stem's phonemes change)
ENDINGS: tuple[tuple[str, str, Callable, Callable], ...] = (
    ("es", "-s", _stems_es, plural),
    ("s", "-s", _stems_s, plural),
    ("ed", "-ed", lambda w: _stems_vowel_ending(w, 2), past),
    ("ing", "-ing", lambda w: _stems_vowel_ending(w, 3), ing),
    ("ness", "-ness", _stems_ness, ness),
)


def inflections(word: str, lexicon: Mapping[str, Sequence[Pron]]) -> list[Candidate]:
    """Every pronunciation of `word` (lower case) as a regular form of a word `lexicon` has, one
    per stem entry and ending that spell it; [] when there is none."""
    out: dict[Pron, Candidate] = {}
    for spelled, name, stems, rule in ENDINGS:
        if not word.endswith(spelled):
            continue
        for stem in dict.fromkeys(stems(word)):
            if len(stem) < MIN_STEM or stem == word or stem not in lexicon:
                continue
            for pron in lexicon[stem]:
                if pron:
                    stress = any(p[-1:].isdigit() for p in pron)
                    phones = rule(tuple(pron), stress)
                    out.setdefault(phones, Candidate(name, stem, phones))
    return list(out.values())


def choose(
    words: Sequence[str],
    own: Sequence[float | None],
    lexicon: Mapping[str, Sequence[Pron]],
    score: Callable[[Sequence[str], Sequence[Pron]], Sequence[float]],
    margin: float = MARGIN,
) -> dict[str, Candidate]:
    """{word: the composed candidate to say instead of the model's output} for those of `words`
    whose best-scored candidate scores at least `own` (the model's score of its own output; None:
    no usable output) minus `margin`. `score(words, phones)` is the model's mean log-probability
    per phoneme of each (g2p_checks.scores)."""
    found = {w: inflections(w, lexicon) for w in dict.fromkeys(words)}
    flat = [(w, c) for w, cands in found.items() for c in cands]
    if not flat:
        return {}
    scored = score([w for w, _ in flat], [c.phones for _, c in flat])
    best: dict[str, tuple[Candidate, float]] = {}
    for (w, c), s in zip(flat, scored):
        if w not in best or s > best[w][1]:
            best[w] = (c, s)
    floor = dict(zip(words, own))
    return {w: c for w, (c, s) in best.items() if floor[w] is None or s >= floor[w] - margin}


def describe(c: Candidate) -> str:
    """The note `tfmr g2p` prints for a composed inflection."""
    return f"{c.stem!r} + {c.ending}, from its entry"
