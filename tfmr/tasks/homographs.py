"""Homographs: which of a word's CMUdict pronunciations the text around it asks for.

    choose(variants, previous)   (index, reason): the pronunciation to use and why

A rule table, not a tagger. CMUdict labels no part of speech, but for the stress-shift pairs
(record, present, object, permit, conduct, ...) the noun puts primary stress on the first
syllable and the verb on a later one. The word before decides which is wanted:

    a determiner or possessive (the, a, my, their, every, ...) or a word ending in 's  -> noun
    to, a modal (will, can, should, ...), a subject pronoun (I, we, they, ...), not   -> verb

and the variant whose primary stress matches is chosen. Anything else (no cue, or variants that
do not differ in where the stress falls, such as hello's HH AH0 L OW1 / HH EH0 L OW1) keeps
the dictionary's first variant, and the reason says so. What it leaves out: homographs that
differ in their vowels rather than their stress (read, lead, live, wind, tear, bass), which a
rule on the word before cannot tell apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from .phonemes import primary_syllable

NOUN_CUES = frozenset(
    "the a an this that these those my your his her its our their every each no some any "
    "another one".split()
)
VERB_CUES = frozenset(
    "to will would can could shall should may might must i we you they he she it not "
    "don't doesn't didn't won't can't cannot".split()
)


def cue(previous: str | None) -> str | None:
    """ "noun", "verb" or None: what the word before says about the next word."""
    if not previous:
        return None
    previous = previous.lower()
    if previous in NOUN_CUES or previous.endswith("'s"):
        return "noun"
    if previous in VERB_CUES:
        return "verb"
    return None


def choose(variants: Sequence[Sequence[str]], previous: str | None) -> tuple[int, str]:
    """The index of the variant to use among `variants` (pronunciations with stress digits), and
    the reason, e.g. ("noun reading (after 'the')"); (0, "") for a word with one variant."""
    if len(variants) < 2:
        return 0, ""
    stressed = [primary_syllable(v) for v in variants]
    want = cue(previous)
    first = [i for i, s in enumerate(stressed) if s == 0]
    later = [i for i, s in enumerate(stressed) if s is not None and s > 0]
    of = f"{len(variants)} variants"
    if want and first and later:
        index = first[0] if want == "noun" else later[0]
        return index, f"{want} reading (after {previous!r}): {index + 1} of {of}"
    return 0, f"1 of {of} (no rule applies; --all shows every one)"
