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


@pytest.fixture(scope="module")
def _trained_once(tmp_path_factory):
    from conftest import SHORT_TEXT

    from tfmr import presets

    root = tmp_path_factory.mktemp("ckpt")
    (root / "corpus.txt").write_text(SHORT_TEXT)
    cfg = presets.tiny()
    cfg.data.path, cfg.data.cache_dir = str(root / "corpus.txt"), str(root / "cache")
    cfg.train.steps, cfg.train.eval_iters = 6, 1
    trainer = Trainer(cfg, root / "run", progress=False, log=lambda *a: None)
    trainer.fit()
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
    assert names == ["config.json", "manifest.json", "model.safetensors", "state.json",
                     "state.safetensors", "tokenizer.json"]
    for p in trained.ckpt_dir.iterdir():
        assert b"\x80\x04\x95" not in p.read_bytes()[:64]  # pickle protocol 4 header
