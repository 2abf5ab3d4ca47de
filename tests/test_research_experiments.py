"""The research experiments at tiny size (the numbers mean nothing; what they check is exact):
long-context (loss by position), streaming (decoding memory along a generation), mixers (equal
parameters). Each writes results.json, table.md and a png."""

from __future__ import annotations

import argparse
import json

import pytest

from tfmr import presets
from tfmr.cli.common import resolve_config
from tfmr.config import to_dict
from tfmr.experiments import EXPERIMENTS

TINY = [
    "--set",
    "model.dim=16",
    "--set",
    "model.layers=1",
    "--set",
    "model.heads=2",
    "--set",
    "train.steps=2",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.warmup=1",
    "--set",
    "train.eval_every=2",
    "--set",
    "train.eval_iters=1",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "train.threads=1",
]


def _run(name, argv):
    parser = argparse.ArgumentParser()
    EXPERIMENTS[name].add_arguments(parser)
    args = parser.parse_args(argv)
    assert EXPERIMENTS[name].main(args) == 0
    return args


@pytest.mark.parametrize("name", ["long-context", "streaming", "mixers"])
def test_the_base_run_is_the_preset(name):
    parser = argparse.ArgumentParser()
    EXPERIMENTS[name].add_arguments(parser)
    assert to_dict(resolve_config(parser.parse_args([]))) == to_dict(presets.get(f"exp-{name}"))


def test_long_context_scores_every_row_by_position(tmp_path):
    L = 8
    _run(
        "long-context",
        [
            "--out",
            str(tmp_path),
            *TINY,
            "--set",
            f"model.context={L}",
            "--factor",
            "4",
            "--windows",
            "1",
            "--sinks",
            "2",
            "--segments",
            "2",
        ],
    )
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    assert list(rows) == ["full", "sliding", "sinks", "xl", "retention"]
    assert all(len(r["per_position"]) == 4 * L for r in rows.values())
    assert [b for b, _ in rows["full"]["buckets"]] == ["0-7", "8-15", "16-31"]
    # the same trained model: below L, a window of L and sinks + window of L see what full attention sees
    for row in ("sliding", "sinks"):
        assert rows[row]["per_position"][:L] == pytest.approx(
            rows["full"]["per_position"][:L], abs=1e-4
        )
    assert rows["sliding"]["per_position"][L:] != pytest.approx(
        rows["full"]["per_position"][L:], abs=1e-4
    )
    assert (tmp_path / "loss_by_position.png").exists() and "| retention |" in (
        tmp_path / "table.md"
    ).read_text()


def test_streaming_state_is_flat_for_sinks_and_retention_and_grows_for_full(tmp_path):
    _run(
        "streaming",
        [
            "--out",
            str(tmp_path),
            *TINY,
            "--set",
            "model.context=8",
            "--tokens",
            "24",
            "--every",
            "8",
            "--window",
            "4",
        ],
    )
    variants = json.loads((tmp_path / "results.json").read_text())["variants"]
    per_position = 2 * 16 * 4  # (k, v) x dim x fp32 bytes, one layer
    assert [r["state_bytes"] for r in variants["full"]] == [
        8 * per_position,
        16 * per_position,
        24 * per_position,
    ]
    assert [r["state_bytes"] for r in variants["sliding"]] == [4 * per_position] * 3
    assert [r["state_bytes"] for r in variants["sinks"]] == [8 * per_position] * 3  # 4 sinks + 4
    assert [r["state_bytes"] for r in variants["retention"]] == [
        2 * 8 * 16 * 4
    ] * 3  # heads x Dk x Dv x 4
    assert (tmp_path / "streaming.png").exists()


def test_mixers_trains_models_of_equal_size(tmp_path):
    _run(
        "mixers",
        [
            "--out",
            str(tmp_path),
            *TINY,
            "--set",
            "model.layers=3",
            "--set",
            "model.context=8",
            "--minutes",
            "5",
        ],
    )
    results = json.loads((tmp_path / "results.json").read_text())
    models = results["models"]
    assert list(models) == ["transformer", "retention", "hybrid"]
    for name, r in models.items():
        assert abs(r["params"] - results["target_params"]) <= 3 * (2 * 16 + 1) // 2 + 1, (
            name
        )  # half an FFN unit
        assert r["steps"] == 2 and r["val_loss"] > 0
    assert (
        models["retention"]["ffn_hidden"]
        < models["hybrid"]["ffn_hidden"]
        < models["transformer"]["ffn_hidden"]
    )
    assert (tmp_path / "mixers.png").exists()
