"""The command line as a user meets it: exit codes, one-line errors, train -> generate."""

from __future__ import annotations

import subprocess
import sys

import pytest


def tfmr(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "tfmr", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_bad_config_key_exits_2_with_one_line_and_no_traceback(tmp_path):
    r = tfmr("lm", "train", "--preset", "tiny", "--set", "model.haeds=8", "--out", str(tmp_path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tfmr: error: unknown key 'model.haeds'; valid keys:")
    assert "heads" in lines[0] and "kv_heads" in lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "model.pos=rotary"], "unknown model.pos kind 'rotary'; valid kinds:"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--data", "/no/such/file.txt"], "data path not found"),
    ],
)
def test_other_user_errors_are_one_line(tmp_path, args, message):
    argv = ["lm", "train", "--preset", "tiny", "--out", str(tmp_path)] + args
    if "--preset" in args:
        argv = ["lm", "train", "--out", str(tmp_path)] + args
    r = tfmr(*argv)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert message in r.stderr


def test_train_then_generate_then_resume(text_file, tmp_path):
    out = tmp_path / "run"
    r = tfmr(
        "lm",
        "train",
        "--preset",
        "tiny",
        "--data",
        str(text_file),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "train.steps=12",
        "-v",
    )
    assert r.returncode == 0, r.stderr
    assert '"steps": 12' in r.stdout  # -v: the resolved config is printed at start
    assert "step 12: train loss" in r.stdout
    g = tfmr(
        "lm",
        "generate",
        "--checkpoint",
        str(out / "checkpoint"),
        "--prompt",
        "To be",
        "--max-new-tokens",
        "25",
        "--seed",
        "3",
    )
    assert g.returncode == 0, g.stderr
    assert g.stdout.startswith("To be") and len(g.stdout.rstrip("\n")) == len("To be") + 25
    g2 = tfmr(
        "lm",
        "generate",
        "--checkpoint",
        str(out / "checkpoint"),
        "--prompt",
        "To be",
        "--max-new-tokens",
        "25",
        "--seed",
        "3",
    )
    assert g2.stdout == g.stdout  # seeded sampling is reproducible
    r = tfmr(
        "lm",
        "train",
        "--preset",
        "tiny",
        "--data",
        str(text_file),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "train.steps=16",
        "--resume",
    )
    assert r.returncode == 0, r.stderr
    assert (
        "resumed from" in r.stdout
        and "at step 12" in r.stdout
        and "step 16: train loss" in r.stdout
    )


def test_generate_refuses_a_tampered_checkpoint(text_file, tmp_path):
    out = tmp_path / "run"
    assert (
        tfmr(
            "lm",
            "train",
            "--preset",
            "tiny",
            "--data",
            str(text_file),
            "--out",
            str(out),
            "--no-progress",
            "--set",
            "train.steps=2",
        ).returncode
        == 0
    )
    weights = out / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    g = tfmr("lm", "generate", "--checkpoint", str(out / "checkpoint"), "--prompt", "To")
    assert g.returncode == 2 and "Traceback" not in g.stderr
    assert "modified or corrupted" in g.stderr
