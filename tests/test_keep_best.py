"""train.keep_best: RUN/best/ holds the weights of the lowest evaluation number, the start included."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import interrupt_at
from safetensors.torch import load_file

from tfmr.config import ConfigError
from tfmr.loop import validate_train
from tfmr.runfolder import LOCK
from tfmr.train import Trainer


def _quiet(cfg, out, **kw):
    return Trainer(cfg, out, progress=False, log=lambda *a: None, **kw)


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _lowest(records, name):
    evals = [r for r in records if name in r]
    return min(evals, key=lambda r: r[name])  # the first of equal values, as keep_best keeps it


def test_best_holds_the_weights_of_the_lowest_validation_loss(tiny_cfg, tmp_path):
    t = tiny_cfg.train
    t.steps, t.eval_every, t.checkpoint_every, t.keep_last, t.keep_best = 6, 1, 1, 6, "val_loss"
    t.lr, t.warmup = 3e-2, 0  # large steps: the validation loss moves, and not only down
    trainer = _quiet(tiny_cfg, tmp_path / "run")
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    records = _records(tmp_path / "run")
    assert records[0]["step"] == 0 and "loss" not in records[0]  # the starting weights, evaluated
    best = _lowest(records, "val_loss")
    assert trainer.best == {"step": best["step"], "value": pytest.approx(best["val_loss"])}
    kept = load_file(tmp_path / "run" / "best" / "model.safetensors")
    expected = (
        start
        if best["step"] == 0
        else load_file(
            tmp_path / "run" / "snapshots" / f"step-{best['step']:07d}" / "model.safetensors"
        )
    )
    for name, tensor in kept.items():
        assert torch.equal(tensor, expected[name]), name


def test_the_starting_weights_are_kept_when_training_only_makes_it_worse(tiny_cfg, tmp_path):
    t = tiny_cfg.train
    t.steps, t.eval_every, t.keep_best, t.lr, t.warmup, t.grad_clip = 3, 1, "val_loss", 5.0, 0, 0.0
    trainer = _quiet(tiny_cfg, tmp_path / "run")
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    records = _records(tmp_path / "run")
    assert all(
        r["val_loss"] > records[0]["val_loss"] for r in records[1:]
    )  # lr 5 without clipping diverges
    assert trainer.best["step"] == 0
    kept = load_file(tmp_path / "run" / "best" / "model.safetensors")
    for name, tensor in kept.items():
        assert torch.equal(tensor, start[name]), name


def test_best_survives_a_resume(tiny_cfg, tmp_path):
    t = tiny_cfg.train
    t.steps, t.eval_every, t.checkpoint_every, t.keep_best = 4, 1, 2, "val_loss"
    first = _quiet(tiny_cfg, tmp_path / "run")
    interrupt_at(first, 2)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    saved = first.best
    resumed = _quiet(tiny_cfg, tmp_path / "run", resume=True)
    assert resumed.best == saved
    resumed.fit()
    assert [r["step"] for r in _records(tmp_path / "run")] == [
        0,
        1,
        2,
        3,
        4,
    ]  # step 0 not evaluated twice
    assert resumed.best == {
        "step": _lowest(_records(tmp_path / "run"), "val_loss")["step"],
        "value": pytest.approx(_lowest(_records(tmp_path / "run"), "val_loss")["val_loss"]),
    }


def test_an_unknown_metric_names_the_ones_there_are(tiny_cfg, tmp_path):
    tiny_cfg.train.keep_best = "dev_wer"
    with pytest.raises(ConfigError, match="train.keep_best=dev_wer.*val_loss"):
        _quiet(tiny_cfg, tmp_path / "run").fit()
    assert not (tmp_path / "run" / LOCK).exists()  # the run folder is released


def test_keep_best_is_refused_with_sharded_checkpoints(tiny_cfg):
    tiny_cfg.train.parallel, tiny_cfg.train.keep_best = "fsdp", "val_loss"
    with pytest.raises(ConfigError, match="keep_best"):
        validate_train(tiny_cfg.train)
