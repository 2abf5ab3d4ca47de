"""Trainer: it learns, it resumes bit for bit, its schedule is the documented one."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import interrupt_at

from tfmr.config import to_dict
from tfmr.schedule import lr_at
from tfmr.train import Trainer


def _quiet(cfg, out, **kw):
    return Trainer(cfg, out, progress=False, log=lambda *a: None, **kw)


def test_tiny_model_overfits_a_short_text(tiny_cfg, tmp_path):
    cfg = tiny_cfg
    cfg.model.dim, cfg.model.layers, cfg.model.heads, cfg.model.context = 64, 2, 4, 32
    cfg.train.steps, cfg.train.lr, cfg.train.warmup, cfg.train.eval_every = 150, 3e-3, 10, 150
    cfg.data.val_fraction = 0.05
    trainer = _quiet(cfg, tmp_path / "run")
    uniform = math.log(trainer.data.tokenizer.vocab_size)  # what guessing achieves
    last = trainer.fit()
    # The text repeats three lines; a model that memorised them is far below uniform guessing.
    assert last["train_loss"] < 0.35, last
    assert last["train_loss"] < uniform / 8


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_resume_is_bit_identical(tiny_cfg, tmp_path, dtype):
    tiny_cfg.train.dtype = dtype
    tiny_cfg.model.dropout = 0.1  # dropout makes the RNG state matter
    tiny_cfg.train.steps, tiny_cfg.train.checkpoint_every, tiny_cfg.train.eval_every = 20, 8, 10
    straight = _quiet(tiny_cfg, tmp_path / "a")
    straight.fit()

    first = _quiet(tiny_cfg, tmp_path / "b")  # interrupted (Ctrl-C) at step k = 7 ...
    interrupt_at(first, 7)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = _quiet(tiny_cfg, tmp_path / "b", resume=True)
    assert resumed.step == 7
    resumed.fit()
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_the_trainer_leaves_the_callers_config_as_given(tiny_cfg, tmp_path):
    """The trainer resolves its own copy (the tokenizer's vocabulary size; a resumed run's saved
    model and data sections): the config object it was handed is not rewritten."""
    tiny_cfg.train.steps, tiny_cfg.model.vocab_size = 2, 7
    given = to_dict(tiny_cfg)
    trainer = _quiet(tiny_cfg, tmp_path / "run")
    trainer.fit()
    assert to_dict(tiny_cfg) == given and tiny_cfg.model.vocab_size == 7
    assert trainer.cfg.model.vocab_size == trainer.data.tokenizer.vocab_size != 7
    tiny_cfg.train.steps, tiny_cfg.model.dropout = (
        3,
        0.25,
    )  # a resumed run keeps its saved model section
    given = to_dict(tiny_cfg)
    resumed = _quiet(tiny_cfg, tmp_path / "run", resume=True)
    resumed.fit()
    assert to_dict(tiny_cfg) == given and resumed.step == 3
    assert resumed.cfg.model.dropout == trainer.cfg.model.dropout != 0.25


def test_lr_schedule_warmup_then_cosine(tiny_cfg):
    t = tiny_cfg.train
    t.lr, t.min_lr, t.warmup, t.steps = 1.0, 0.1, 10, 110
    assert lr_at(0, t) == 0.1 and lr_at(9, t) == 1.0
    assert math.isclose(lr_at(10, t), 1.0)
    assert math.isclose(lr_at(60, t), 0.55)  # half way through the cosine
    assert math.isclose(lr_at(110, t), 0.1)


def test_grad_accumulation_matches_a_bigger_batch(tiny_cfg, tmp_path):
    """Two micro-batches of 4 give the gradient of one batch of 8 over the same windows."""
    tiny_cfg.train.batch_size, tiny_cfg.train.grad_accum = 8, 1
    big = _quiet(tiny_cfg, tmp_path / "big")
    tiny_cfg.train.batch_size, tiny_cfg.train.grad_accum = 4, 2
    small = _quiet(tiny_cfg, tmp_path / "small")
    x, y = big.batches.next()
    chunks = iter([(x[:4], y[:4]), (x[4:], y[4:])])
    small.batches.next = lambda device=None: next(chunks)
    big.batches.next = lambda device=None: (x, y)
    for trainer in (big, small):  # keep the gradients: compare them before any update
        trainer.optimizer.step = lambda: None
        trainer.optimizer.zero_grad = lambda set_to_none=True: None
        trainer.train_step()
    for (n, p), q in zip(big.model.named_parameters(), small.model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-7, rtol=1e-5, msg=n)


def test_run_writes_metrics_plot_and_checkpoint(tiny_cfg, tmp_path):
    tiny_cfg.train.steps = 10
    trainer = _quiet(tiny_cfg, tmp_path / "run")
    trainer.fit()
    lines = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in lines] == list(range(1, 11))
    assert "val_loss" in lines[-1]
    png = (tmp_path / "run" / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (tmp_path / "run" / "checkpoint" / "manifest.json").exists()


def test_language_model_trains_on_bpe_ids_and_carries_its_tokenizer(tiny_cfg, tmp_path):
    from tfmr.cli import load_model
    from tfmr.config import apply_override

    apply_override(tiny_cfg, "data.tokenizer=bpe")
    apply_override(tiny_cfg, "data.tokenizer.vocab_size=300")
    tiny_cfg.train.steps = 30
    trainer = _quiet(tiny_cfg, tmp_path / "run")
    tok = trainer.data.tokenizer
    assert tok.kind == "bpe" and trainer.model.cfg.vocab_size == tok.vocab_size
    text = "To be, or not to be"
    assert len(tok.encode(text)) < len(text)  # merges were learned and used
    last = trainer.fit()
    assert last["train_loss"] < math.log(tok.vocab_size) - 1.0
    model, loaded, _ = load_model(trainer.ckpt_dir)
    assert loaded.kind == "bpe" and loaded.encode(text) == tok.encode(text)


def test_language_model_time_budget_decays_the_schedule_and_stops(tiny_cfg, tmp_path):
    """The wall-clock budget lives in the shared loop, so `tfmr lm train` has it too."""
    cfg = tiny_cfg
    cfg.train.steps, cfg.train.max_minutes = (
        10_000,
        1e-9,
    )  # the first step already spends the budget
    trainer = _quiet(cfg, tmp_path / "run")
    last = trainer.fit()
    assert trainer.step == 1 and trainer.progress_fraction() == 1.0
    assert last["step"] == 1 and "val_loss" in last  # the last step evaluates and checkpoints
    assert (tmp_path / "run" / "checkpoint").is_dir()
    assert (
        trainer.schedule_step() == cfg.train.steps
        and lr_at(trainer.schedule_step(), cfg.train) == cfg.train.min_lr
    )
