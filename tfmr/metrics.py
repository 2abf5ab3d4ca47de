"""Sequence metrics: BLEU (through sacrebleu, and on token ids), WER and PER, edit distance.

    bleu(hyps, refs)              corpus BLEU of detokenized strings, sacrebleu's own (13a tokenizer)
    sentence_bleu(hyp, refs)      sacrebleu's sentence BLEU (exp smoothing, effective order)
    token_bleu(hyps, refs)        the same BLEU on sequences of tokens (ids or strings), no
                                  tokenizer: a reward for RL on token ids; equals sacrebleu with
                                  tokenize="none" on the space-joined tokens
    edit_distance(a, b)           Levenshtein distance between two sequences
    wer(hyps, refs)               word error rate in the G2P sense: the share of items whose
                                  hypothesis equals none of its references
    per(hyps, refs)               phoneme (token) error rate: sum over items of the edit distance
                                  to the closest reference, divided by the sum of the lengths of
                                  those references. On words instead of phonemes this is the WER
                                  of speech recognition.

`refs` is one reference per item, or a list of references per item (CMUdict words have several
pronunciations). Perplexity is exp of a model's mean loss and needs no function; degeneration
metrics (repetition, self-BLEU, Zipf, distinct-n) live in degeneration.py.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

# ----------------------------------------------------------------------------- references


def _ref_lists(hyps: Sequence, refs: Sequence) -> list[list]:
    """Each item's references as a list; one reference per item is the same as a list of one."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference entries")
    out = []
    for r in refs:
        many = isinstance(r, (list, tuple)) and len(r) > 0 and isinstance(r[0], (list, tuple))
        out.append([list(x) for x in r] if many else [list(r)])
    return out


def _string_ref_lists(hyps: Sequence[str], refs: Sequence) -> list[list[str]]:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference entries")
    return [[r] if isinstance(r, str) else list(r) for r in refs]


# ----------------------------------------------------------------------------- BLEU via sacrebleu


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "BLEU needs sacrebleu: pip install 'tfmr[metrics]' (or pip install sacrebleu)"
        ) from None
    return sacrebleu


def bleu(hyps: Sequence[str], refs: Sequence, **kwargs) -> float:
    """Corpus BLEU (0-100) as sacrebleu computes it; `refs`: a string or a list of strings per hypothesis.

    Items may have different numbers of references; sacrebleu's reference streams are filled with
    None where an item has fewer. `kwargs` go to sacrebleu (tokenize=..., lowercase=...).
    """
    lists = _string_ref_lists(hyps, refs)
    depth = max((len(r) for r in lists), default=1)
    streams = [[r[i] if i < len(r) else None for r in lists] for i in range(depth)]  # (refs, items)
    return _sacrebleu().corpus_bleu(list(hyps), streams, **kwargs).score


def sentence_bleu(hyp: str, refs: str | Sequence[str], **kwargs) -> float:
    """Sentence BLEU (0-100) as sacrebleu computes it (exp smoothing, effective order)."""
    return (
        _sacrebleu()
        .sentence_bleu(hyp, [refs] if isinstance(refs, str) else list(refs), **kwargs)
        .score
    )


# ----------------------------------------------------------------------------- BLEU on tokens


def _ngrams(tokens: Sequence, max_n: int) -> Counter:
    return Counter(
        tuple(tokens[i : i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1)
    )


def _closest_length(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length closest to the hypothesis length; the shorter one on a tie (as sacrebleu)."""
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def bleu_stats(
    hyp: Sequence, refs: list[list], max_n: int = 4
) -> tuple[list[int], list[int], int, int]:
    """(matches per order, hypothesis n-grams per order, hypothesis length, reference length)."""
    hyp_counts = _ngrams(list(hyp), max_n)
    best: Counter = Counter()
    for ref in refs:  # clip each n-gram by its largest count in any reference
        best |= _ngrams(list(ref), max_n)
    correct, total = [0] * max_n, [0] * max_n
    for gram, count in hyp_counts.items():
        total[len(gram) - 1] += count
        correct[len(gram) - 1] += min(count, best[gram])
    return correct, total, len(hyp), _closest_length(len(hyp), [len(r) for r in refs])


def bleu_from_stats(
    correct: list[int],
    total: list[int],
    hyp_len: int,
    ref_len: int,
    smooth: str = "exp",
    effective_order: bool = False,
    floor: float = 0.1,
) -> float:
    """BLEU (0-100) from summed statistics: geometric mean of the n-gram precisions times the
    brevity penalty (Papineni et al. 2002), as sacrebleu's compute_bleu. Smoothing of a zero
    precision: "exp" is NIST's (Chen & Cherry 2014, method 3: the k-th zero counts as
    1 / (2^k * n-grams)); "floor" counts it as `floor` matches; "none" leaves it zero."""
    if smooth not in ("exp", "floor", "none"):
        raise ValueError(f"unknown smoothing {smooth!r}; valid: exp, floor, none")
    if not any(correct):
        return 0.0
    bp = 1.0 if hyp_len >= ref_len else (math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0)
    logs, halvings = [], 1.0
    for c, t in zip(correct, total):
        if t == 0:
            break
        if c == 0:
            if smooth == "exp":
                halvings *= 2
                logs.append(math.log(1.0 / (halvings * t)))
            elif smooth == "floor":
                logs.append(math.log(floor / t))
            else:
                logs.append(-9999999999.0)  # log(0), as sacrebleu writes it
        else:
            logs.append(math.log(c / t))
    order = len(logs) if effective_order else len(correct)
    logs += [-9999999999.0] * (order - len(logs))  # orders with no n-grams at all count as zero
    return 100.0 * bp * math.exp(sum(logs[:order]) / order)


def token_bleu(
    hyps: Sequence[Sequence], refs: Sequence, max_n: int = 4, smooth: str = "exp"
) -> float:
    """Corpus BLEU (0-100) over token sequences, statistics summed over the corpus."""
    sums = [[0] * max_n, [0] * max_n, 0, 0]
    for hyp, rs in zip(hyps, _ref_lists(hyps, refs)):
        c, t, h, r = bleu_stats(hyp, rs, max_n)
        sums = [
            [a + b for a, b in zip(sums[0], c)],
            [a + b for a, b in zip(sums[1], t)],
            sums[2] + h,
            sums[3] + r,
        ]
    return bleu_from_stats(*sums, smooth=smooth)


def token_sentence_bleu(hyp: Sequence, refs: Sequence, max_n: int = 4) -> float:
    """Sentence BLEU (0-100) of one token sequence: exp smoothing and effective order, as sacrebleu."""
    (rs,) = _ref_lists([hyp], [refs])
    return bleu_from_stats(*bleu_stats(hyp, rs, max_n), smooth="exp", effective_order=True)


# ----------------------------------------------------------------------------- WER / PER


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1), O(len(a) * len(b))."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def closest_reference(hyp: Sequence, refs: list[list]) -> tuple[int, list]:
    """(edit distance, reference) of the reference nearest to `hyp`; the first one on a tie."""
    return min(((edit_distance(hyp, r), r) for r in refs), key=lambda dr: dr[0])


def wer(hyps: Sequence[Sequence], refs: Sequence) -> float:
    """Share of items (0-1) whose hypothesis equals none of its references (G2P word error rate)."""
    lists = _ref_lists(hyps, refs)
    if not lists:
        raise ValueError("wer of an empty set")
    wrong = sum(list(h) not in rs for h, rs in zip(hyps, lists))
    return wrong / len(lists)


def per(hyps: Sequence[Sequence], refs: Sequence) -> float:
    """Sum of edit distances to each item's closest reference over the sum of those references'
    lengths (0-1, can exceed 1). Phoneme error rate; on word sequences, speech recognition's WER."""
    errors = length = 0
    for h, rs in zip(hyps, _ref_lists(hyps, refs)):
        d, r = closest_reference(list(h), rs)
        errors, length = errors + d, length + len(r)
    if length == 0:
        raise ValueError("per: the references are empty")
    return errors / length
