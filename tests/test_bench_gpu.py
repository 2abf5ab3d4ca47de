"""`tfmr bench gpu --quick`: every section of the GPU benchmark runs on CPU at tiny sizes."""
from __future__ import annotations

import json

import pytest

from tfmr.cli import main

pytestmark = pytest.mark.slow


def test_bench_gpu_quick_runs_every_section(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "gpu", "--quick", "--out", str(out), "--minutes", "30"]) == 0  # no time box on a busy machine
    report = json.loads(out.with_suffix(".json").read_text())
    assert {name: s["status"] for name, s in report["sections"].items()} == dict.fromkeys(
        ("train", "decode", "attention", "moe"), "ok")
    rows = report["sections"]["train"]["result"]["rows"]
    assert {(r["shape"], r["name"]) for r in rows} == {("gpt2-124m", "tfmr"), ("gpt2-124m", "nanogpt-arch"),
                                                       ("gpt2-124m", "hf-gpt2"), ("llama-124m", "tfmr"),
                                                       ("llama-124m", "hf-llama")}
    assert all(r["tokens_per_s"] > 0 for r in rows)
    md = out.with_suffix(".md").read_text()
    assert "| gpt2-124m | hf-gpt2 |" in md and "## decode" in md and "## attention" in md


def test_time_box_stops_a_section_that_overruns():
    import time

    from tfmr.bench.gpu import TimeBox, time_box

    with pytest.raises(TimeBox, match="stopped after"):
        with time_box(1.0):
            time.sleep(5)
