"""tfmr g2p beside espeak-ng and g2p_en on the same sentences: IPA side by side, as a markdown table.

Each system reads each sentence whole: tfmr through `tfmr.g2p.pronounce` (IPA with stress, the
`--join` line), espeak-ng as a program (`espeak-ng -q --ipa -v en-us`, when it is installed), and
g2p_en from Python (its ARPAbet put through tfmr's IPA table, so that the columns compare), when
it is installed and can run. A system that cannot run gets one cell saying why. What is right in
each cell is judged by a reader (docs/g2p.md has that table); this prints the outputs only.

    tfmr bench g2p-compare [--sentence TEXT ...]
"""

from __future__ import annotations

import shutil
import subprocess

SENTENCES = (
    "Hello, world! The quick brown fox.",
    "covid19 rock-n-roll ChatGPT café",
    "Mr. Smith paid $3.50 in 1999.",
    "I want to record a record.",
    "The present is to present.",
    "New York's 21st century",
    "supercalifragilisticexpialidocious",
)


def add_arguments(p) -> None:
    p.add_argument(
        "--sentence",
        action="append",
        help="a sentence to compare (repeatable; default a fixed set)",
    )


def tfmr_ipa(text: str) -> str:
    from ..g2p import joined, pronounce

    words = pronounce(text, format="ipa", stress=True)
    marked = [w.word for w in words if w.source in ("low-confidence", "unreadable")]
    return joined(words, "ipa") + (f" (marked: {', '.join(marked)})" if marked else "")


def espeak_ipa(text: str) -> str:
    program = shutil.which("espeak-ng")
    if program is None:
        return "(not installed: apt-get install espeak-ng)"
    r = subprocess.run(
        [program, "-q", "--ipa", "-v", "en-us", text], capture_output=True, text=True, timeout=60
    )
    return " ".join(r.stdout.split()) if r.returncode == 0 else f"(failed: {r.stderr.strip()[:80]})"


def g2p_en_reader():
    """A function text -> IPA through g2p_en, or a string saying why it cannot run here."""
    try:
        from g2p_en import G2p

        reader = G2p()
        reader("test")
    except ImportError:
        return "(not installed: pip install 'tfmr[g2p-compare]')"
    except Exception as e:  # noqa: BLE001 - g2p_en needs NLTK data it downloads at run time
        lines = [ln.strip(" *") for ln in str(e).splitlines() if ln.strip(" *")]
        return f"(cannot run here: {type(e).__name__}{': ' + lines[0][:70] if lines else ''})"

    def read(text: str) -> str:
        from ..tasks.phonemes import to_ipa

        out, word = [], []
        for symbol in reader(text) + [" "]:
            if symbol == " " or not symbol[:1].isupper():
                if word:
                    out.append(to_ipa(word, stress=True))
                    word = []
                if symbol.strip():
                    out.append(symbol)
            else:
                word.append(symbol)
        return " ".join(out)

    return read


def main(args) -> int:
    sentences = args.sentence or SENTENCES
    g2p_en = g2p_en_reader()
    print(
        "| sentence | tfmr g2p --text --format ipa --stress --join | espeak-ng (en-us) | g2p_en |"
    )
    print("|---|---|---|---|")
    for text in sentences:
        other = g2p_en(text) if callable(g2p_en) else g2p_en
        print(f"| {text} | {tfmr_ipa(text)} | {espeak_ipa(text)} | {other} |")
    return 0
