"""The code's shape (issue #27 item 9): ruff's formatter and linter, at the settings in pyproject.toml.

ruff is a test dependency (pyproject's `test` extra), so a missing ruff fails here instead of skipping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_ruff_lint_passes():
    done = _ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_leaves_every_file_unchanged():
    done = _ruff("format", "--no-cache", "--check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_lines_are_short_on_average():
    """The anchors (nanoGPT, minbpe, torchtune) average 37-45 characters a code line, 1-4% over 100."""
    lines = [
        line.rstrip("\n")
        for path in (ROOT / "tfmr").rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    over = sum(len(line) > 100 for line in lines) / len(lines)
    mean = sum(map(len, lines)) / len(lines)
    assert over < 0.04 and mean < 50, (over, mean)
