"""The G2P text front end: running text -> the words to pronounce, each with a kind.

    fold(text)               accented Latin letters folded (café -> cafe, Straße -> Strasse),
                             curly quotes and dashes made plain
    tokenize(text, known)    Tokens, in order: words, numbers spelled out, acronyms, boundaries
    LETTER_NAMES             how each letter is read in an acronym (ARPAbet with CMUdict stress)

A Token keeps the text it came from (`source`), its `kind` and the words to speak:

    word         a word, folded; hyphenated and camel-case words are split into their parts
                 (rock-n-roll -> rock n roll; ChatGPT -> Chat GPT) unless the dictionary has
                 the whole; a letters-and-digits word is split at the change (covid19 -> covid 19)
    number       digits spelled out by num2words: cardinals (42), decimals (3.5), ordinals (21st),
                 years (a bare 4-digit number from 1100 to 2099: 1999 -> nineteen ninety-nine),
                 currency ($3.50, £5, €20), percentages (7%)
    abbreviation a short table (Mr. -> mister, Dr. -> doctor, ...): the dot is no boundary
    acronym      a word in capitals (or one with no vowel letter) the dictionary lacks, read
                 letter by letter (GPT -> G P T)
    boundary     punctuation: , . ! ? ; : ( ) quotes and dashes, kept as a pause, not spoken

`known(word)` says whether the dictionary has a (lower-case) word; it decides splitting and
acronyms. What it leaves out: dates and times as such (12/05 is two numbers), roman numerals,
units (km, kg), and any language but English; characters outside Latin letters, digits and
punctuation stay in a word, which the pronouncer then reports as unreadable.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

WORD, NUMBER, ABBREVIATION, ACRONYM, BOUNDARY = (
    "word",
    "number",
    "abbreviation",
    "acronym",
    "boundary",
)
KINDS = (WORD, NUMBER, ABBREVIATION, ACRONYM, BOUNDARY)

# Letters that NFKD does not split into a base letter and a mark.
_FOLDS = {
    "ß": "ss",
    "æ": "ae",
    "Æ": "AE",
    "œ": "oe",
    "Œ": "OE",
    "ø": "o",
    "Ø": "O",
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "Đ": "D",
    "ð": "d",
    "þ": "th",
    "ı": "i",
    "‘": "'",
    "’": "'",
    "ʼ": "'",
    "“": '"',
    "”": '"',
    "„": '"',
    "«": '"',
    "»": '"',
    "–": " - ",
    "—": " - ",
    "…": "...",
    "\u00a0": " ",
}

ABBREVIATIONS = {
    "mr": ("mister",),
    "mrs": ("missus",),
    "ms": ("miz",),
    "dr": ("doctor",),
    "prof": ("professor",),
    "st": ("saint",),
    "jr": ("junior",),
    "sr": ("senior",),
    "vs": ("versus",),
    "etc": ("et", "cetera"),
    "e.g": ("for", "example"),
    "i.e": ("that", "is"),
    "approx": ("approximately",),
    "no": ("number",),
}
# "no." is read "number" only before a digit (No. 5); elsewhere it is the word "no" and a full stop.

SYMBOLS = {"&": ("and",), "+": ("plus",), "@": ("at",), "=": ("equals",), "%": ("percent",)}
# sign -> (unit, units, hundredth, hundredths); num2words says the amounts
CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
PUNCTUATION = ".,!?;:()[]{}\"'-/&*…"

LETTER_NAMES = {
    "a": "EY1",
    "b": "B IY1",
    "c": "S IY1",
    "d": "D IY1",
    "e": "IY1",
    "f": "EH1 F",
    "g": "JH IY1",
    "h": "EY1 CH",
    "i": "AY1",
    "j": "JH EY1",
    "k": "K EY1",
    "l": "EH1 L",
    "m": "EH1 M",
    "n": "EH1 N",
    "o": "OW1",
    "p": "P IY1",
    "q": "K Y UW1",
    "r": "AA1 R",
    "s": "EH1 S",
    "t": "T IY1",
    "u": "Y UW1",
    "v": "V IY1",
    "w": "D AH1 B AH0 L Y UW0",
    "x": "EH1 K S",
    "y": "W AY1",
    "z": "Z IY1",
}

_CHUNK = re.compile(r"\S+")
_MONEY = re.compile(r"([$£€])(\d[\d,]*(?:\.\d+)?)")
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
_ORDINAL = re.compile(r"(\d+)(st|nd|rd|th)", re.I)
_PIECE = re.compile(
    r"[$£€]\d[\d,]*(?:\.\d+)?|\d+(?:st|nd|rd|th)\b|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?%?"
    r"|[^\W\d_]+(?:'[^\W\d_]+)*|'[^\W\d_]+|.",
    re.UNICODE,
)
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z']+|[^\W\d_]+")
_VOWEL_LETTERS = frozenset("aeiouy")


@dataclass(frozen=True)
class Token:
    """One piece of the text: `words` are what is spoken (none for a boundary)."""

    source: str  # the text it came from ($3.50, ChatGPT, ',')
    kind: str
    words: tuple[str, ...]


def fold(text: str) -> str:
    """Accents off Latin letters (NFKD, combining marks dropped), a few letters spelled out,
    curly quotes and dashes made plain. Letters of other scripts are kept as they are."""
    text = "".join(_FOLDS.get(c, c) for c in text)
    out = []
    for c in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(c):
            continue
        out.append(c)
    return unicodedata.normalize("NFC", "".join(out))


def _num2words():
    """num2words, or one line saying it is missing (a dependency of tfmr)."""
    try:
        from num2words import num2words
    except ImportError:
        from ..config import ConfigError

        raise ConfigError(
            "G2P reads numbers with the num2words package, a dependency of tfmr: "
            "pip install num2words"
        ) from None
    return num2words


def spell_number(text: str) -> list[str]:
    """Digits (with a currency sign, %, an ordinal ending or thousands commas) as English words."""
    num2words = _num2words()

    money = _MONEY.fullmatch(text)
    if money:
        return _money(money.group(1), money.group(2).replace(",", ""))
    ordinal = _ORDINAL.fullmatch(text)
    if ordinal:
        return _words(num2words(int(ordinal.group(1)), to="ordinal"))
    percent = text.endswith("%")
    digits = text.rstrip("%").replace(",", "")
    if re.fullmatch(r"\d{4}", text) and 1100 <= int(text) <= 2099:
        said = num2words(int(text), to="year")
    else:
        said = num2words(float(digits) if "." in digits else int(digits))
    return _words(said) + (["percent"] if percent else [])


def _money(sign: str, amount: str) -> list[str]:
    """$3.50 -> three dollars and fifty cents (no cents when there are none)."""
    num2words = _num2words()

    unit, units, cent, cents = CURRENCIES[sign]
    whole, _, fraction = amount.partition(".")
    hundredths = int((fraction + "00")[:2]) if fraction else 0
    said = _words(num2words(int(whole))) + [unit if int(whole) == 1 else units]
    if hundredths:
        said += ["and", *_words(num2words(hundredths)), cent if hundredths == 1 else cents]
    return said


def _words(said: str) -> list[str]:
    """num2words' text as words: hyphens and commas dropped (twenty-one -> twenty one)."""
    return re.findall(r"[a-z']+", said.lower())


def split_word(word: str, known: Callable[[str], bool]) -> list[str]:
    """A word the dictionary lacks, split at case changes and letter/digit changes (ChatGPT ->
    Chat GPT, covid19 -> covid 19); a word it has, or one with no such change, as it is."""
    if known(word.lower()):
        return [word]
    parts = [p for p in re.split(r"(\d+)", word) if p]
    out: list[str] = []
    for part in parts:
        if part.isdigit() or known(part.lower()):
            out.append(part)
        else:
            out.extend(_CAMEL.findall(part) or [part])
    return out


def is_acronym(word: str, known: Callable[[str], bool]) -> bool:
    """A word the dictionary lacks, written in capitals (GPT) or with no vowel letter (xkcd)."""
    lower = word.lower()
    if known(lower) or not lower.isascii() or not lower.isalpha():
        return False
    return (len(word) >= 2 and word.isupper()) or not (set(lower) & _VOWEL_LETTERS)


def tokenize(text: str, known: Callable[[str], bool]) -> list[Token]:
    """The tokens of `text`, in order (see the module docstring)."""
    out: list[Token] = []
    chunks = _CHUNK.findall(fold(text))
    for i, chunk in enumerate(chunks):
        following = chunks[i + 1] if i + 1 < len(chunks) else ""
        out.extend(_chunk_tokens(chunk, following, known))
    return out


def _chunk_tokens(chunk: str, following: str, known: Callable[[str], bool]) -> list[Token]:
    """One whitespace-separated chunk: an abbreviation, or its pieces."""
    abbreviation = _abbreviation(chunk, following)
    if abbreviation is not None:
        return abbreviation
    core = chunk.strip(PUNCTUATION.replace("'", ""))
    pieces = (
        _keep_apostrophes(chunk, core)
        if "'" in core and known(core.lower())
        else _PIECE.findall(chunk)
    )
    tokens: list[Token] = []
    for piece in pieces:
        if piece in ("-", "/") and piece != chunk:  # inside a word: rock-n-roll, and/or
            continue
        tokens.extend(_piece_tokens(piece, known))
    return tokens


def _keep_apostrophes(chunk: str, core: str) -> list[str]:
    """A chunk whose apostrophes belong to a dictionary word ('em, rock'n'roll): that word whole,
    with the punctuation around it apart."""
    start = chunk.index(core)
    return list(chunk[:start]) + [core] + list(chunk[start + len(core) :])


def _abbreviation(chunk: str, following: str) -> list[Token] | None:
    """Mr. / Dr. / e.g. (with the dot; a comma after it stays a boundary), or None."""
    m = re.fullmatch(r"([A-Za-z]+(?:\.[A-Za-z]+)?)\.([,;:!?)]*)", chunk)
    if not m or m.group(1).lower() not in ABBREVIATIONS:
        return None
    key = m.group(1).lower()
    if key == "no" and not following[:1].isdigit():
        return None
    tokens = [Token(chunk[: len(m.group(1)) + 1], ABBREVIATION, ABBREVIATIONS[key])]
    return tokens + [Token(c, BOUNDARY, ()) for c in m.group(2)]


def _piece_tokens(piece: str, known: Callable[[str], bool]) -> list[Token]:
    if piece[0].isdigit() or piece[0] in CURRENCIES:
        if not any(c.isdigit() for c in piece):
            return [Token(piece, BOUNDARY, ())]
        return [Token(piece, NUMBER, tuple(spell_number(piece)))]
    if not any(c.isalpha() for c in piece):
        said = SYMBOLS.get(piece)
        return [Token(piece, WORD, said)] if said else [Token(piece, BOUNDARY, ())]
    tokens = []
    if piece.startswith("'") and not known(piece.lower()):  # an opening quote: 'quoted'
        tokens.append(Token("'", BOUNDARY, ()))
        piece = piece[1:]
    for part in split_word(piece, known):
        if part.isdigit():
            tokens.append(Token(part, NUMBER, tuple(spell_number(part))))
        elif is_acronym(part, known):
            tokens.append(Token(part, ACRONYM, (part,)))
        else:
            tokens.append(Token(part, WORD, (part,)))
    return tokens


def acronym_phones(word: str) -> tuple[str, ...]:
    """An acronym read letter by letter, in ARPAbet with CMUdict's stress digits."""
    return tuple(p for letter in word.lower() for p in LETTER_NAMES[letter].split())
