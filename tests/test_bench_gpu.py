"""`tfmr bench gpu --quick`: every section of the GPU benchmark runs on CPU at tiny sizes.

The decode section is `tfmr bench gpu-decode --quick --no-compile` (a minute of beam search and
Hugging Face generate on 2 cores); here it is replaced by a stand-in that checks what it is
handed and writes the files the real one writes, so the test stays short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfmr.bench import gpu
from tfmr.cli import main

pytestmark = pytest.mark.slow


def test_bench_gpu_quick_runs_every_section(tmp_path, monkeypatch):
    handed = []

    def decode_stand_in(args):
        handed.append(args)
        Path(args.out).write_text("| model | tokens/s |\n|---|---|\n| gpt2-tiny | 1 |\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps({"rows": []}))
        return 0

    monkeypatch.setattr(gpu.gpu_decode, "main", decode_stand_in)
    out = tmp_path / "bench"
    assert (
        main(["bench", "gpu", "--quick", "--out", str(out), "--minutes", "30"]) == 0
    )  # no time box on a busy machine
    assert handed[0].quick and handed[0].no_compile and handed[0].out == str(out / "decode.md")
    report = json.loads(out.with_suffix(".json").read_text())
    assert {name: s["status"] for name, s in report["sections"].items()} == dict.fromkeys(
        ("train", "decode", "attention", "moe"), "ok"
    )
    rows = report["sections"]["train"]["result"]["rows"]
    assert {(r["shape"], r["name"]) for r in rows} == {
        ("gpt2-124m", "tfmr"),
        ("gpt2-124m", "nanogpt-arch"),
        ("gpt2-124m", "hf-gpt2"),
        ("llama-124m", "tfmr"),
        ("llama-124m", "hf-llama"),
    }
    assert all(r["tokens_per_s"] > 0 for r in rows)
    md = out.with_suffix(".md").read_text()
    assert (
        "| gpt2-124m | hf-gpt2 |" in md
        and "## decode" in md
        and "| gpt2-tiny | 1 |" in md
        and "## attention" in md
    )


def test_time_box_stops_a_section_that_overruns():
    import time

    from tfmr.bench.gpu import TimeBox, time_box

    with pytest.raises(TimeBox, match="stopped after"):
        with time_box(1.0):
            time.sleep(5)
