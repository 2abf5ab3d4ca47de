"""Start-up: `tfmr --help`, `--version`, `tfmr presets` and `tfmr g2p hello` beside `import torch`.

    tfmr bench startup                  # 7 rounds
    tfmr bench startup --rounds 21 --json startup.json

Each command runs as a fresh process (`python -m tfmr ...`), the commands taken in turn within each
round (interleaved, so a shared machine's noise hits all alike), after one uncounted round that
warms the file cache. The figure is each command's median wall time in seconds, beside two
peers measured the same way: `python -c "import torch"` (what every command paid when the
parser imported torch) and `python -c pass` (the interpreter alone). The goal for the tfmr
commands is 0.3 s; a command that fails is reported with its exit status and first error line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..programs import positive_int

GOAL = 0.3  # seconds: issue #28's goal for --help, --version, presets and a dictionary look-up

# label -> the interpreter's arguments; `goal`: whether the 0.3 s goal applies (tfmr's commands)
COMMANDS = {
    "tfmr --help": (["-m", "tfmr", "--help"], True),
    "tfmr --version": (["-m", "tfmr", "--version"], True),
    "tfmr presets": (["-m", "tfmr", "presets"], True),
    "tfmr g2p hello": (["-m", "tfmr", "g2p", "hello"], True),
    'python -c "import torch"': (["-c", "import torch"], False),
    "python -c pass": (["-c", "pass"], False),
}
PEER_NOTES = {
    'python -c "import torch"': "the peer: what each command paid when its parser imported torch",
    "python -c pass": "the interpreter alone",
}


def add_arguments(p) -> None:
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=7,
        help="counted rounds, each running every command once (one more round warms up first)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def child_env() -> dict[str, str]:
    """The environment of each run: this one, with the tfmr being measured first on the path."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=root + (os.pathsep + path if path else ""))


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, str | None]:
    """(wall seconds, None) of one fresh process, or (seconds, why it failed)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        first = (r.stderr.strip().splitlines() or [""])[0]
        return seconds, f"exit {r.returncode}: {first}"
    return seconds, None


def measure(rounds: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Every command `rounds` times, interleaved, after one warm-up round: (times, failures)."""
    env = child_env()
    times: dict[str, list[float]] = {label: [] for label in COMMANDS}
    failures: dict[str, str] = {}
    for n in range(rounds + 1):
        for label, (argv, _) in COMMANDS.items():
            seconds, failed = run_once(argv, env)
            if failed:
                failures[label] = failed
            elif n > 0:  # round 0 warms the file cache
                times[label].append(seconds)
    return times, failures


def table(times: dict[str, list[float]], failures: dict[str, str]) -> list[str]:
    width = max(map(len, COMMANDS))
    lines = [f"  {'command':<{width}}    median       min"]
    for label, (_, goal) in COMMANDS.items():
        if label in failures:
            lines.append(f"  {label:<{width}}  failed ({failures[label]})")
            continue
        median, fastest = statistics.median(times[label]), min(times[label])
        verdict = (
            f"goal <= {GOAL} s: {'met' if median <= GOAL else 'not met'}"
            if goal
            else PEER_NOTES[label]
        )
        lines.append(f"  {label:<{width}}  {median:6.3f} s  {fastest:6.3f} s  {verdict}")
    return lines


def main(args) -> int:
    print(
        f"startup: each command a fresh process ({sys.executable}), {args.rounds} round(s) "
        "interleaved after one warm-up round; median and fastest wall time"
    )
    times, failures = measure(args.rounds)
    print("\n".join(table(times, failures)))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "goal_seconds": GOAL,
                    "median_seconds": {
                        label: statistics.median(t) for label, t in times.items() if t
                    },
                    "rounds": times,
                    "failures": failures,
                },
                indent=2,
            )
        )
    return 0
