"""Checkpoints: round trip, tamper detection, cut-short saves, no pickle anywhere."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tfmr import checkpoint
from tfmr.checkpoint import CheckpointError
from tfmr.cli import load_model
from tfmr.train import Trainer


def _tiny_run(root, **train) -> Trainer:
    """Train the `tiny` preset for 6 steps on a short text in `root/run` (train settings overridable)."""
    from conftest import SHORT_TEXT

    from tfmr import presets

    (root / "corpus.txt").write_text(SHORT_TEXT)
    cfg = presets.tiny()
    cfg.data.path, cfg.data.cache_dir = str(root / "corpus.txt"), str(root / "cache")
    cfg.train.steps, cfg.train.eval_iters = 6, 1
    for key, value in train.items():
        setattr(cfg.train, key, value)
    trainer = Trainer(cfg, root / "run", progress=False, log=lambda *a: None)
    trainer.fit()
    return trainer


@pytest.fixture(scope="module")
def _trained_once(tmp_path_factory):
    trainer = _tiny_run(tmp_path_factory.mktemp("ckpt"))
    return trainer, trainer.ckpt_dir


@pytest.fixture
def trained(_trained_once, tmp_path):
    """The module's trained run with a private copy of its checkpoint (tests may damage it)."""
    trainer, original = _trained_once
    trainer.ckpt_dir = tmp_path / "checkpoint"
    shutil.copytree(original, trainer.ckpt_dir)
    return trainer


def test_round_trip_gives_the_same_model_and_tokenizer(trained):
    model, tok, cfg = load_model(trained.ckpt_dir)
    ids = torch.randint(0, tok.vocab_size, (2, 10))
    trained.model.eval()
    torch.testing.assert_close(model(ids).logits, trained.model(ids).logits, rtol=0, atol=0)
    assert tok.encode("To be") == trained.data.tokenizer.encode("To be")
    assert cfg.model.dim == trained.cfg.model.dim
    assert model.lm_head.weight is model.tok_emb.weight  # tying survives the round trip


def test_optimizer_state_round_trips(trained):
    _, plain = checkpoint.load_state(trained.ckpt_dir)
    saved = plain["optimizer"]["state"]
    live = trained.optimizer.state_dict()["state"]
    assert saved.keys() == live.keys()
    for idx in live:
        for name, value in live[idx].items():
            assert torch.equal(saved[idx][name], value), (idx, name)
    assert plain["step"] == 6


def test_tampered_weights_are_refused(trained):
    path = trained.ckpt_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the last weight
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="modified or corrupted"):
        load_model(trained.ckpt_dir)


def test_edited_config_is_refused(trained):
    path = trained.ckpt_dir / "config.json"
    cfg = json.loads(path.read_text())
    cfg["model"]["dim"] = 64
    path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json does not match"):
        load_model(trained.ckpt_dir)


def test_missing_file_and_missing_checkpoint(trained, tmp_path):
    (trained.ckpt_dir / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json is missing"):
        checkpoint.verify(trained.ckpt_dir)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        checkpoint.verify(tmp_path / "nowhere")


def test_cut_short_save_falls_back_to_the_previous_checkpoint(trained):
    """A crash between the two renames leaves `.old` complete; loading finds it."""
    old = trained.ckpt_dir.with_name("checkpoint.old")
    trained.ckpt_dir.rename(old)
    trained.ckpt_dir.mkdir()  # a half-made folder where the real one was
    assert checkpoint.resolve(trained.ckpt_dir) == old
    model, _, _ = load_model(trained.ckpt_dir)
    assert model is not None


def test_checkpoint_holds_no_pickle(trained):
    names = sorted(p.name for p in trained.ckpt_dir.iterdir())
    assert names == [
        "config.json",
        "manifest.json",
        "model.safetensors",
        "state.json",
        "state.safetensors",
        "tokenizer.json",
    ]
    for p in trained.ckpt_dir.iterdir():
        assert b"\x80\x04\x95" not in p.read_bytes()[:64]  # pickle protocol 4 header


# ----------------------------------------------------------------------------- snapshots, averaging
@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    """A tiny run that keeps its last two checkpoints (saved every 2 of 6 steps) as snapshots."""
    return (
        _tiny_run(tmp_path_factory.mktemp("snap"), checkpoint_every=2, keep_last=2).out
        / "snapshots"
    )


def test_keep_last_keeps_the_newest_weights_only(snapshots):
    assert [p.name for p in sorted(snapshots.iterdir())] == ["step-0000004", "step-0000006"]
    assert not (
        snapshots / "step-0000006" / "state.json"
    ).exists()  # weights, config, tokenizer only
    final, _, _ = load_model(snapshots.parent / "checkpoint")
    last, _, _ = load_model(snapshots / "step-0000006")
    for (name, a), b in zip(final.state_dict().items(), last.state_dict().values()):
        assert torch.equal(a, b), name


def test_average_is_the_mean_of_the_weights_and_loads(snapshots, tmp_path):
    from tfmr.cli import main

    assert (
        main(
            ["checkpoint", "average", "--last", "2", str(snapshots), "--out", str(tmp_path / "avg")]
        )
        == 0
    )
    avg, tok, _ = load_model(tmp_path / "avg")
    a, _, _ = load_model(snapshots / "step-0000004")
    b, tok_b, _ = load_model(snapshots / "step-0000006")
    moved = 0
    for name, w in avg.state_dict().items():
        wa, wb = a.state_dict()[name], b.state_dict()[name]
        torch.testing.assert_close(w, (wa + wb) / 2, rtol=0, atol=1e-7)
        moved += not torch.equal(wa, wb)
    assert moved > 0  # the two snapshots differ, so the check above could fail
    assert avg.lm_head.weight is avg.tok_emb.weight  # tying survives averaging
    assert tok.encode("To be") == tok_b.encode("To be") and tok.vocab_size == tok_b.vocab_size


def test_average_refuses_other_models_and_bad_requests(snapshots, tmp_path):
    from tfmr.cli import main

    other = tmp_path / "other"
    shutil.copytree(snapshots / "step-0000006", other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["model"]["dim"] += 8
    (other / "config.json").write_text(json.dumps(cfg))
    (other / "manifest.json").write_text(
        json.dumps(
            {
                **json.loads((other / "manifest.json").read_text()),
                "config.json": checkpoint._sha256(other / "config.json"),
            }
        )
    )
    with pytest.raises(CheckpointError, match="different model"):
        checkpoint.average([snapshots / "step-0000006", other], tmp_path / "avg")
    with pytest.raises(CheckpointError, match="nothing to average"):
        checkpoint.average([], tmp_path / "avg")
    assert (
        main(
            ["checkpoint", "average", "--last", "3", str(snapshots), "--out", str(tmp_path / "avg")]
        )
        == 2
    )
    assert not (tmp_path / "avg").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask):
    """safetensors writes its files 0600; a checkpoint, an export and an average get what any file
    written here gets (0644 under umask 022), so other users and tools can read a shipped model."""
    import os
    import stat

    model, config = torch.nn.Linear(3, 2), {"model": {}}
    old = os.umask(umask)
    try:
        folders = [
            checkpoint.save(tmp_path / "saved", model, config),
            checkpoint.export(tmp_path / "exported", model, config),
            checkpoint.average([tmp_path / "saved"], tmp_path / "averaged"),
        ]
    finally:
        os.umask(old)
    for folder in folders:
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        assert set(modes.values()) == {0o666 & ~umask}, (folder.name, modes)
        assert "model.safetensors" in modes


def test_consolidate_prints_no_raw_torch_warnings(tmp_path, capfd, recwarn):
    """A sharded checkpoint read in one process: torch.distributed.checkpoint warns that it assumes
    one process on each call; that is what consolidate means, so the user sees only its own line."""
    from safetensors.torch import load_file

    from tfmr import RunConfig, build_model, parallel
    from tfmr.cli import main
    from tfmr.config import ModelConfig, to_dict
    from tfmr.loop import make_optimizer

    run = RunConfig(model=ModelConfig(vocab_size=11, dim=16, layers=1, heads=2, context=8))
    model = build_model(run.model)
    optimizer = make_optimizer(model, run.train, torch.device("cpu"))  # as consolidate rebuilds it
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)).loss.backward()
    optimizer.step()
    parallel.save_sharded(
        parallel.Parallel(torch.device("cpu")),
        tmp_path / "sharded",
        model,
        optimizer,
        to_dict(run),
        None,
        {},
        {"step": 1},
    )
    capfd.readouterr()
    recwarn.clear()
    assert (
        main(
            [
                "checkpoint",
                "consolidate",
                str(tmp_path / "sharded"),
                "--out",
                str(tmp_path / "plain"),
            ]
        )
        == 0
    )
    out, err = capfd.readouterr()
    assert err == "" and [str(w.message)[:80] for w in recwarn] == []
    assert out == f"plain checkpoint: {tmp_path / 'plain'}\n"
    weights = load_file(str(tmp_path / "plain" / "model.safetensors"))
    assert all(
        torch.equal(weights[name], p.detach())
        for name, p in model.state_dict().items()
        if name in weights
    )
