"""`tfmr g2p -` on a long input: peak memory and the time to the first line (issue #26's promise).

Runs `tfmr g2p -` as a child process, writes N words to its standard input (CMUdict words, with
every K-th one replaced by a made-up word the model must predict) and reads its standard output
as it comes. Prints the seconds from the child's start to its first output line, the total time,
the words/s, and the child's peak resident memory (`getrusage` of the waited child), each beside
the goal: memory under 500 MB whatever the input size, the first line within 2 seconds.

    tfmr bench g2p-stream [--words 100000] [--unknown-every 100] [--beam 1] [--threads 1]

What it does not measure: a terminal's progress line (stderr is a pipe here), and text mode
(`--text -`), which streams the same way in batches of lines.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time

GOAL_MB, GOAL_FIRST_S = 500, 2.0


def add_arguments(p) -> None:
    p.add_argument(
        "--words", type=int, default=100_000, help="how many words to feed (default 100000)"
    )
    p.add_argument(
        "--unknown-every",
        type=int,
        default=100,
        help="every K-th word is made up, so the model predicts it (default 100; 0: none)",
    )
    p.add_argument(
        "--beam", type=int, default=1, help="beam size for the predicted words (default 1, greedy)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads in the child (default 1)")


def made_up(i: int) -> str:
    """A pronounceable word that is in no dictionary, different for each i."""
    onsets, vowels, codas = (
        ("bl", "tr", "sk", "gr", "pl", "st", "dr", "fl"),
        "aeiou",
        ("nt", "rk", "sp", "ld", "mb"),
    )
    parts = []
    for _ in range(3):
        parts.append(onsets[i % 8] + vowels[(i // 8) % 5] + codas[(i // 40) % 5])
        i //= 7
    return "".join(parts) + "ix"


def feed_words(n: int, unknown_every: int) -> list[str]:
    from ..tasks import g2p

    known = sorted(w for w in g2p.lexicon() if w.isalpha())
    return [
        made_up(i)
        if unknown_every and i % unknown_every == unknown_every - 1
        else known[i % len(known)]
        for i in range(n)
    ]


def _writer(stdin, words: list[str]) -> None:
    try:
        for start in range(0, len(words), 1000):
            stdin.write(("\n".join(words[start : start + 1000]) + "\n").encode())
        stdin.close()
    except BrokenPipeError:
        pass


def run_child(words: list[str], beam: int, threads: int) -> dict:
    """Time one `tfmr g2p -` child over `words`; its peak RSS from getrusage once it is waited."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "tfmr", "g2p", "-", "--beam", str(beam)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    child = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    feeder = threading.Thread(target=_writer, args=(child.stdin, words), daemon=True)
    feeder.start()
    first, lines = None, 0
    for _ in child.stdout:
        lines += 1
        if first is None:
            first = time.perf_counter() - t0
    code = child.wait()
    total = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "exit": code,
        "lines": lines,
        "first_s": first,
        "total_s": total,
        "peak_mb": peak_kb / 1024 if peak_kb > before else float("nan"),
    }


def main(args) -> int:
    words = feed_words(args.words, args.unknown_every)
    unknown = (
        args.words // args.unknown_every if args.unknown_every else 0
    )  # feed_words' every K-th word
    print(
        f"tfmr g2p - on {len(words):,} words ({unknown:,} made up, predicted with beam {args.beam}), "
        f"{args.threads} torch thread(s)"
    )
    r = run_child(words, args.beam, args.threads)
    first = "no output" if r["first_s"] is None else f"{r['first_s']:.2f} s"
    why = " (1: some made-up words were low-confidence, as documented)" if r["exit"] == 1 else ""
    print(f"exit status           {r['exit']} ({r['lines']:,} lines out){why}")
    print(f"first line after      {first:>10}   goal <= {GOAL_FIRST_S:.0f} s")
    print(f"peak memory (RSS)     {r['peak_mb']:7.0f} MB   goal < {GOAL_MB} MB")
    print(
        f"all words in          {r['total_s']:7.1f} s    ({len(words) / r['total_s']:,.0f} words/s)"
    )
    return 0
