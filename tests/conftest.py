"""Shared test fixtures: small configs and a short text corpus."""

from __future__ import annotations

import pytest
import torch

from tfmr import presets

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Token caches of the tests (and of the CLI subprocesses they start) stay in a temp folder."""
    import os

    os.environ["TFMR_CACHE"] = str(tmp_path_factory.mktemp("tfmr-cache"))


SHORT_TEXT = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
) * 3


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SHORT_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def tiny_cfg(text_file, tmp_path):
    cfg = presets.tiny()
    cfg.data.path = str(text_file)
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.eval_iters = 1
    return cfg


def assert_steps_match_full_forward(model, src, tgt, prefix: int, max_len: int):
    """Decode `tgt` through the model's cache (a `prefix`-token first step, then one token at a
    time) and check every step's logits against the full teacher-forced forward. Returns the state."""
    import torch

    full = model(src, tgt).logits
    state = model.start_state(src.shape[0], max_len, src)
    logits, state = model.step(tgt[:, :prefix], state)
    torch.testing.assert_close(logits, full[:, prefix - 1], atol=1e-5, rtol=1e-5)
    for t in range(prefix, tgt.shape[1]):
        logits, state = model.step(tgt[:, t : t + 1], state)
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)
    return state


def interrupt_at(trainer, step: int) -> None:
    """Make `trainer` raise KeyboardInterrupt (as Ctrl-C does) just before its step `step + 1`."""
    train_step = trainer.train_step

    def interrupted():
        if trainer.step == step:
            raise KeyboardInterrupt
        return train_step()

    trainer.train_step = interrupted


def reversal_batch(g, B: int, vocab: int):
    """A batch of the reversal task for encoder-decoders (ids 0 pad, 1 bos, 2 eos, 3.. symbols):
    2-5 symbols in, the same backwards then </s> out. (src (B, 5), decoder input (B, 6), targets
    (B, 6) with -100 where nothing is scored), drawn from generator `g`."""
    import torch

    lengths = torch.randint(2, 6, (B,), generator=g)
    src, tgt_in = torch.full((B, 5), 0), torch.full((B, 6), 0)
    targets = torch.full((B, 6), -100)
    for b in range(B):
        n = int(lengths[b])
        s = torch.randint(3, vocab, (n,), generator=g)
        y = torch.cat((s.flip(0), torch.tensor([2])))
        src[b, :n] = s
        tgt_in[b, : n + 1] = torch.cat((torch.tensor([1]), y[:-1]))
        targets[b, : n + 1] = y
    return src, tgt_in, targets
