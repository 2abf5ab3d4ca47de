"""Metrics: BLEU equals sacrebleu on fixtures (strings and token ids), WER / PER on hand-made cases."""

from __future__ import annotations

import random

import pytest

from tfmr.metrics import (
    bleu,
    edit_distance,
    per,
    sentence_bleu,
    token_bleu,
    token_sentence_bleu,
    wer,
)

sacrebleu = pytest.importorskip("sacrebleu")

HYPS = [
    "the cat sat on the mat .",
    "a quick brown fox jumps over the dog",
    "hello there",
    "no overlap here",
]
REFS_A = [
    "the cat is on the mat .",
    "the quick brown fox jumped over the lazy dog",
    "hello there general",
    "xyz",
]
REFS_B = [
    "there is a cat on the mat .",
    "a fast brown fox jumps over a dog",
    "hi there",
    "nothing at all",
]


def test_corpus_bleu_with_one_and_several_references_equals_sacrebleu():
    assert bleu(HYPS, REFS_A) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS_A]).score)
    both = [[a, b] for a, b in zip(REFS_A, REFS_B)]
    assert bleu(HYPS, both) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS_A, REFS_B]).score)
    assert bleu(HYPS, both) > bleu(HYPS, REFS_A)  # a second reference can only add matches


def test_sentence_bleu_equals_sacrebleu():
    for h, a, b in zip(HYPS, REFS_A, REFS_B):
        assert sentence_bleu(h, a) == pytest.approx(sacrebleu.sentence_bleu(h, [a]).score)
        assert sentence_bleu(h, [a, b]) == pytest.approx(sacrebleu.sentence_bleu(h, [a, b]).score)


def _random_corpus(seed, n=40):
    rng = random.Random(seed)
    sent = lambda: [rng.randrange(12) for _ in range(rng.randint(0, 14))]  # noqa: E731
    return [sent() for _ in range(n)], [[sent(), sent()] for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_bleu_equals_sacrebleu_without_tokenizer(seed):
    hyps, refs = _random_corpus(seed)
    join = lambda s: " ".join(f"t{t}" for t in s)  # noqa: E731
    ref_streams = [[join(r[i]) for r in refs] for i in range(2)]
    expected = sacrebleu.corpus_bleu([join(h) for h in hyps], ref_streams, tokenize="none").score
    assert token_bleu(hyps, refs) == pytest.approx(expected, abs=1e-9)
    for h, r in zip(hyps[:15], refs[:15]):
        exp_s = sacrebleu.sentence_bleu(join(h), [join(x) for x in r], tokenize="none").score
        assert token_sentence_bleu(h, r) == pytest.approx(exp_s, abs=1e-9)


def test_bleu_of_a_perfect_corpus_is_100_and_of_a_disjoint_one_is_0():
    assert token_bleu([[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 5]]) == pytest.approx(100.0)
    assert token_bleu([[1, 2, 3, 4, 5]], [[6, 7, 8, 9]]) == 0.0


@pytest.mark.parametrize(
    "a, b, d",
    [
        ("kitten", "sitting", 3),
        ("", "abc", 3),
        ("abc", "", 3),
        ("flaw", "lawn", 2),
        ("same", "same", 0),
        (["K", "AE", "T"], ["K", "AA", "T", "S"], 2),
    ],
)
def test_edit_distance_on_known_pairs(a, b, d):
    assert edit_distance(a, b) == d == edit_distance(b, a)


def test_wer_counts_a_word_right_when_it_matches_any_reference():
    refs = [
        [["T", "AH", "M", "EY", "T", "OW"], ["T", "AH", "M", "AA", "T", "OW"]],  # tomato: two
        [["R", "EH", "D"], ["R", "IY", "D"]],
        [["K", "AE", "T"]],
    ]
    hyps = [["T", "AH", "M", "AA", "T", "OW"], ["R", "IY", "D"], ["K", "AA", "T"]]
    assert wer(hyps, refs) == pytest.approx(1 / 3)
    assert wer(hyps[:2], refs[:2]) == 0.0


def test_per_uses_the_closest_reference_and_its_length():
    refs = [
        [
            ["A", "B", "C", "D"],
            ["A", "X"],
        ],  # hyp "A X Y": 1 edit from "A X" (length 2), 2 from "A B C D"
        [["K", "AE", "T"]],
    ]
    hyps = [["A", "X", "Y"], ["K", "AE"]]
    assert per(hyps, refs) == pytest.approx((1 + 1) / (2 + 3))


def test_per_on_words_is_speech_recognition_wer():
    ref = "the cat sat on the mat".split()
    hyp = "the cat sat mat extra".split()  # two deletions ("on the") and one insertion
    assert per([hyp], [ref]) == pytest.approx(3 / 6)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference"):
        wer([["A"], ["B"]], [["A"]])
