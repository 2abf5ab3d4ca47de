"""Phoneme symbols: ARPAbet as CMUdict writes it, its IPA spelling, and stress digits.

    ARPABET_IPA              the one ARPAbet -> IPA table (the 39 phonemes of CMUdict; AH and ER
                             have a stressed and an unstressed IPA vowel)
    strip_stress(phones)     AH0 -> AH, EY1 -> EY
    has_stress(phones)       whether any symbol carries a digit
    stress_of(phone)         0, 1, 2 or None (a consonant, or a vowel written without a digit)
    primary_syllable(phones) the index (0-based, counting vowels) of the vowel with stress 1
    to_ipa(phones, stress)   one IPA string for a pronunciation; with `stress` the marks
                             ˈ (primary) and ˌ (secondary) go before each stressed syllable

What it leaves out: phonemes outside CMUdict's set (AX, IX, DX, ... of TIMIT's ARPAbet), and
narrow transcription (aspiration, flapping, vowel length): one symbol maps to one IPA string.
A vowel written without a digit (the output of a model trained without stress) is spelled as
its unstressed form for AH (ə) and ER (ɚ), the more frequent ones in CMUdict.
"""

from __future__ import annotations

from collections.abc import Sequence

# ARPAbet (CMUdict's 39 symbols) -> IPA. AH and ER carry two entries: stressed (1, 2) and not (0).
ARPABET_IPA = {
    "AA": "ɑ",
    "AE": "æ",
    "AH": "ʌ",
    "AH0": "ə",
    "AO": "ɔ",
    "AW": "aʊ",
    "AY": "aɪ",
    "EH": "ɛ",
    "ER": "ɝ",
    "ER0": "ɚ",
    "EY": "eɪ",
    "IH": "ɪ",
    "IY": "i",
    "OW": "oʊ",
    "OY": "ɔɪ",
    "UH": "ʊ",
    "UW": "u",
    "B": "b",
    "CH": "tʃ",
    "D": "d",
    "DH": "ð",
    "F": "f",
    "G": "ɡ",
    "HH": "h",
    "JH": "dʒ",
    "K": "k",
    "L": "l",
    "M": "m",
    "N": "n",
    "NG": "ŋ",
    "P": "p",
    "R": "ɹ",
    "S": "s",
    "SH": "ʃ",
    "T": "t",
    "TH": "θ",
    "V": "v",
    "W": "w",
    "Y": "j",
    "Z": "z",
    "ZH": "ʒ",
}
VOWELS = frozenset(
    ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
)
PRIMARY, SECONDARY = "ˈ", "ˌ"
# Consonant clusters that may open an English syllable (besides any single consonant but NG):
# where stress marks go in IPA (the maximal onset rule, on a short list).
_LIQUIDS = ("R", "L", "W", "Y")
ONSETS = frozenset(
    [(c, g) for c in ("P", "B", "T", "D", "K", "G", "F", "TH", "SH") for g in _LIQUIDS]
    + [("S", c) for c in ("P", "T", "K", "M", "N", "L", "W")]
    + [("S", c, g) for c in ("P", "T", "K") for g in _LIQUIDS]
    + [("V", "Y"), ("M", "Y"), ("HH", "Y"), ("N", "Y"), ("HH", "W")]
)


def strip_stress(phones: Sequence[str]) -> tuple[str, ...]:
    """AH0 -> AH, EY1 -> EY: the vowels' stress digits removed."""
    return tuple(p.rstrip("012") for p in phones)


def has_stress(phones: Sequence[str]) -> bool:
    return any(p[-1:] in ("0", "1", "2") for p in phones)


def stress_of(phone: str) -> int | None:
    return int(phone[-1]) if phone[-1:] in ("0", "1", "2") else None


def is_vowel(phone: str) -> bool:
    return phone.rstrip("012") in VOWELS


def primary_syllable(phones: Sequence[str]) -> int | None:
    """Which vowel (0 = the first) carries primary stress; None when none is marked."""
    vowels = [p for p in phones if is_vowel(p)]
    return next((i for i, p in enumerate(vowels) if stress_of(p) == 1), None)


def ipa_of(phone: str) -> str:
    """One symbol's IPA; a KeyError names a symbol outside CMUdict's set."""
    base, digit = phone.rstrip("012"), phone[len(phone.rstrip("012")) :]
    if base in ("AH", "ER") and digit != "1" and digit != "2":
        return ARPABET_IPA[base + "0"]  # unstressed, or no digit at all
    return ARPABET_IPA[base]


def _onset_start(phones: Sequence[str], vowel_at: int, previous_vowel: int) -> int:
    """Where the syllable of the vowel at `vowel_at` begins: after the previous vowel, the
    longest run of consonants before this vowel that can open a syllable (one consonant at least,
    all of them at the start of the word)."""
    consonants = [strip_stress([p])[0] for p in phones[previous_vowel + 1 : vowel_at]]
    if previous_vowel < 0:
        return 0
    for take in range(len(consonants), 0, -1):
        cluster = tuple(consonants[-take:])
        if (take == 1 and cluster[0] != "NG") or cluster in ONSETS:
            return vowel_at - take
    return vowel_at


def to_ipa(phones: Sequence[str], stress: bool = False) -> str:
    """The IPA of one pronunciation, symbols run together (`HH AH0 L OW1 -> həloʊ`, with `stress`
    `həˈloʊ`). Stress marks need digits: phones without them get none."""
    marks: dict[int, str] = {}
    if stress:
        previous = -1
        for i, p in enumerate(phones):
            if is_vowel(p):
                s = stress_of(p)
                if s in (1, 2):
                    marks[_onset_start(phones, i, previous)] = PRIMARY if s == 1 else SECONDARY
                previous = i
    return "".join(marks.get(i, "") + ipa_of(p) for i, p in enumerate(phones))


def format_phones(phones: Sequence[str], format: str = "arpabet", stress: bool = False) -> str:  # noqa: A002
    """A pronunciation as printed: ARPAbet separated by spaces (digits kept with `stress`), or IPA."""
    if format == "ipa":
        return to_ipa(phones, stress)
    return " ".join(phones if stress else strip_stress(phones))


FORMATS = ("arpabet", "ipa")
