"""G2P output checks: no silent garbage for long or odd words.

    length_limit(letters, cap)    how many phonemes decoding may write for a word: 1.6 per letter + 4,
                                  at most `cap` (the model's positions)
    problem(word, phones, ...)    why a prediction looks wrong, or "": empty, cut at the limit, a
                                  repeated n-gram (a loop), too few or too many phonemes for its
                                  letters, a low mean log-probability, an -ies word without a
                                  final Z
    scores(model, vocab, ...)     the model's mean log-probability per phoneme of each prediction
                                  (teacher-forced, </s> included)
    dictionary_parts(word, lex)   the word as the fewest dictionary words of 3+ letters that spell
                                  it exactly (incomprehensibly -> in + comprehensibly), or None
    decode_checked(...)           predict, check, and for each flagged word repair it (a wider beam
                                  over the full length, then dictionary parts) or leave it flagged

The thresholds are read off CMUdict and the test split (docs/g2p.md, "Long words"): of the
dictionary's own words, none of 6+ letters has more than 1.6 phonemes a letter; fewer than 0.45
(6-11 letters), 0.55 (12-15) and 0.65 (16+) have 0.13%, 0.23% and 0.39% of them; 42 of 124,926
pronunciations hold an n-gram of 3+ phonemes twice in a row. On the test split, greedy, the
shipped (stress-free) model's predictions with a mean log-probability under -0.4 (20 of 6,261)
were wrong 19 times. Of CMUdict's 705 words of 5+ letters ending in -ies, 703 end in Z (not: the
name devries, and hysterectomies, whose entry lacks its Z); the shipped model (g2p-long) says a
final Z for all 72 such dev and test words, and drops it from incomprehensibilities, which its
wider beams do not repair: that word is now marked, where it passed unflagged.
What it leaves out: it cannot tell a plausible wrong pronunciation from a right one; it flags
outputs whose shape or score says the decoder went astray.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .symbols import mean_logprobs

PER_LETTER, EXTRA = 1.6, 4  # the length limit: ceil(1.6 * letters) + 4 phonemes
# phonemes per letter: at least MIN_RATIO[i] for words of RATIO_FROM[i] letters or more, at most MAX_RATIO.
# In CMUdict (first pronunciations, no apostrophe) 2% of the 240 words of 16+ letters fall below 0.75
# and 5% below 0.765; the shipped model's cut output of incomprehensibilities (16 phonemes for 21
# letters, 0.76) sits among them, so 16+ letters take 0.78: a few more right guesses are marked
# low-confidence (or repaired by the wider beam), a cut one is not passed as predicted
RATIO_FROM, MIN_RATIO, MAX_RATIO = (6, 12, 16), (0.45, 0.55, 0.78), 1.6
LOOP_NGRAM = 3  # an n-gram of this many phonemes or more, twice in a row, is a loop
LOW_SCORE = -0.4  # mean log-probability per phoneme below which a prediction is flagged
REPAIR_SCORE = -0.3  # what a wider beam's output must reach to repair a flagged word (stricter)


@dataclass
class Checked:
    """One predicted word: its phonemes, the model's mean log-probability, what looks wrong (empty
    when nothing does) and how it was repaired (empty when it was not)."""

    phones: tuple[str, ...]
    score: float
    problem: str = ""
    repair: str = ""


def length_limit(letters: int, cap: int) -> int:
    return max(1, min(cap, math.ceil(PER_LETTER * letters) + EXTRA))


def repeated_ngram(phones: Sequence[str], n: int = LOOP_NGRAM) -> tuple[str, ...] | None:
    """The first n-gram (n or longer) that comes twice in a row, or None."""
    for size in range(n, len(phones) // 2 + 1):
        for i in range(len(phones) - 2 * size + 1):
            if tuple(phones[i : i + size]) == tuple(phones[i + size : i + 2 * size]):
                return tuple(phones[i : i + size])
    return None


def min_ratio(letters: int) -> float | None:
    """The fewest phonemes per letter a word of `letters` letters may have (None: not checked)."""
    found = [low for start, low in zip(RATIO_FROM, MIN_RATIO) if letters >= start]
    return found[-1] if found else None


def problem(word: str, phones: Sequence[str], score: float, limit: int) -> str:
    """Why the prediction `phones` of `word` looks wrong, or "" when nothing does."""
    if not phones:
        return "the model wrote no phonemes"
    if len(phones) >= limit:
        return f"cut at the length limit ({limit} phonemes for {len(word)} letters)"
    loop = repeated_ngram(phones)
    if loop:
        return f"a loop: {' '.join(loop)} twice in a row"
    ratio, low = len(phones) / max(len(word), 1), min_ratio(len(word))
    if low is not None and not low <= ratio <= MAX_RATIO:
        return f"{len(phones)} phonemes for {len(word)} letters ({'too few' if ratio < low else 'too many'})"
    if score < LOW_SCORE:
        return f"a low model score (mean log-probability {score:.2f} per phoneme)"
    if _plural_ies(word) and phones[-1] != "Z":
        return "an -ies word whose pronunciation does not end in Z"
    return ""


def _plural_ies(word: str) -> bool:
    """A word of 5+ letters spelled with a final -ies, which English says with a final Z."""
    return len(word) > 4 and word.lower().endswith("ies")


def scores(
    model, vocab, words: Sequence[str], phones: Sequence[Sequence[str]], batch_size: int = 256
) -> list[float]:
    """The mean log-probability per phoneme (and </s>) the model gives each word's `phones`."""
    return mean_logprobs(model, vocab, [w.lower() for w in words], phones, batch_size)


def dictionary_parts(word: str, lexicon: dict, min_letters: int = 3) -> list[str] | None:
    """`word` as the fewest dictionary words (each of `min_letters` or more) that spell it exactly."""
    word = word.lower()
    best: list[list[str] | None] = [None] * (len(word) + 1)
    best[0] = []
    for end in range(min_letters, len(word) + 1):
        for start in range(0, end - min_letters + 1):
            part = word[start:end]
            if best[start] is not None and part in lexicon:
                candidate = best[start] + [part]
                if best[end] is None or len(candidate) < len(best[end]):
                    best[end] = candidate
    found = best[len(word)]
    return found if found and len(found) > 1 else None


def _decode(
    model, vocab, cfg, words: Sequence[str], beam: int, limits: Sequence[int]
) -> list[Checked]:
    from .g2p import predict

    preds, means = predict(
        model,
        vocab,
        words,
        beam,
        max(limits),
        cfg.decode.batch_size,
        cfg.decode.length_penalty,
        scored=True,
    )
    out = [Checked(tuple(p[:limit]), m) for p, m, limit in zip(preds, means, limits)]
    # the search's own score holds for a word that ended within its limit; one cut at its limit
    # (or never ended) is scored as it is printed, with </s> after its last phoneme
    cut = [
        i
        for i, (p, m, limit) in enumerate(zip(preds, means, limits))
        if m is None or len(p) > limit
    ]
    rescored = scores(model, vocab, [words[i] for i in cut], [out[i].phones for i in cut])
    for i, s in zip(cut, rescored):
        out[i].score = s
    return out


def decode_checked(
    model,
    vocab,
    cfg,
    words: Sequence[str],
    beam: int,
    lexicon: dict | None = None,
    cap: int | None = None,
) -> list[Checked]:
    """Predict `words` with the length limit tied to each word, check each prediction, and repair
    the flagged ones: first a wider beam (at least 8) allowed the model's full length, whose output
    must pass the checks with a mean log-probability of at least REPAIR_SCORE, then the
    word's dictionary parts; a word still flagged keeps its best guess and its `problem`."""
    cap = cap or cfg.decode.max_len
    limits = [length_limit(len(w), cap) for w in words]
    out = _decode(model, vocab, cfg, words, beam, limits)
    for c, w, limit in zip(out, words, limits):
        c.problem = problem(w, c.phones, c.score, limit)
    flagged = [i for i, c in enumerate(out) if c.problem]
    if flagged:
        wide = max(2 * beam, 8)
        again = _decode(model, vocab, cfg, [words[i] for i in flagged], wide, [cap] * len(flagged))
        for i, c in zip(flagged, again):
            c.problem = problem(words[i], c.phones, c.score, cap)
            if not c.problem and c.score >= REPAIR_SCORE:
                out[i] = Checked(c.phones, c.score, "", f"beam {wide}")
    for i in flagged:
        parts = dictionary_parts(words[i], lexicon) if out[i].problem and lexicon else None
        if parts:
            phones = tuple(p for part in parts for p in lexicon[part][0])
            out[i] = Checked(phones, out[i].score, "", "dictionary parts: " + " + ".join(parts))
    return out
