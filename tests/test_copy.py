"""Pointer-generator: p_gen = 1 is the plain softmax head, the output is a distribution, copying
puts attention mass on source-only tokens, cached decoding equals the full forward."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import assert_steps_match_full_forward

from tfmr import Choice, ConfigError, ModelConfig
from tfmr.builder import build_copy_model
from tfmr.pointer import copy_distribution
from tfmr.seq2seq import UNK, Vocab
from tfmr.tasks.copytask import decode_extended, extended_ids, make_example

V = 12


def _cfg(**kw):
    base = dict(
        arch="encoder-decoder",
        vocab_size=V,
        dim=32,
        layers=2,
        encoder_layers=2,
        heads=4,
        context=32,
        kernel=Choice("eager"),
        pos=Choice("sinusoidal"),
        pad_id=0,
    )
    base.update(kw)
    return ModelConfig(**base)


def _batch():
    src = torch.tensor(
        [[5, 12, 7, 13, 12], [6, 4, 14, 0, 0]]
    )  # ids >= 12 are source-only; row 2 padded
    tgt = torch.tensor([[1, 12, 8, 13], [1, 14, 5, 0]])
    return src, tgt


def test_copy_distribution_with_p_gen_one_is_the_softmax_and_sums_to_one():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, V)
    attn = torch.softmax(torch.randn(2, 3, 5), -1)
    src_ext = torch.tensor([[5, 12, 7, 13, 12], [6, 4, 14, 2, 2]])
    p = copy_distribution(logits, attn, src_ext, torch.ones(2, 3, 1), n_ext=3)
    torch.testing.assert_close(p[..., :V], torch.softmax(logits, -1))
    assert torch.all(p[..., V:] == 0)
    mixed = copy_distribution(logits, attn, src_ext, torch.rand(2, 3, 1), n_ext=3)
    torch.testing.assert_close(mixed.sum(-1), torch.ones(2, 3))
    only_copy = copy_distribution(logits, attn, src_ext, torch.zeros(2, 3, 1), n_ext=3)
    torch.testing.assert_close(
        only_copy[0, :, 12], attn[0, :, 1] + attn[0, :, 4]
    )  # token 12 sits twice


def test_model_with_p_gen_forced_to_one_equals_the_plain_head():
    torch.manual_seed(0)
    model = build_copy_model(_cfg(), unk_id=UNK).eval()
    with torch.no_grad():
        model.gate.weight.zero_()
        model.gate.bias.fill_(100.0)  # sigmoid(100) == 1 in float32
    src, tgt = _batch()
    out = model(src, tgt)
    plain = model.base(model.in_vocab(src), model.in_vocab(tgt))
    assert out.logits.shape == (2, 4, V + 3)
    torch.testing.assert_close(out.logits.exp()[..., :V], torch.softmax(plain.logits, -1))
    assert torch.all(out.logits.exp()[..., V:] < 1e-12)


def test_output_is_a_distribution_and_the_loss_is_its_nll():
    torch.manual_seed(0)
    model = build_copy_model(_cfg(), unk_id=UNK).eval()
    src, tgt = _batch()
    targets = torch.tensor([[12, 8, 13, 2], [14, 5, 2, -100]])
    out = model(src, tgt, targets)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(2, 4))
    picked = out.logits.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    expected = -(picked * (targets != -100)).sum() / (targets != -100).sum()
    torch.testing.assert_close(out.loss, expected)
    assert (
        out.logits.exp()[1, 0, 13] < 1e-12
    )  # token 13 is not in row 2's source: it cannot be copied there
    assert out.logits.exp()[1, 0, 14] > 0  # token 14 is


def test_copy_model_cached_decoding_equals_full_forward():
    torch.manual_seed(0)
    model = build_copy_model(_cfg(), unk_id=UNK).eval()
    src, tgt = _batch()
    state = assert_steps_match_full_forward(model, src, tgt, prefix=2, max_len=8)
    state.reorder(torch.tensor([1, 1]))  # beam search keeps rows: the source ids follow
    assert torch.equal(state.src_ext[0], src[1])


def test_copy_model_refuses_what_it_cannot_use():
    with pytest.raises(ConfigError, match="model.kernel=eager"):
        build_copy_model(_cfg(kernel=Choice("sdpa")))
    with pytest.raises(ConfigError, match="share one vocabulary"):
        build_copy_model(_cfg(share_embeddings=False, src_vocab_size=20))


def test_extended_ids_map_source_only_symbols_and_back():
    vocab = Vocab(["a", "b", "c"])  # ids 4, 5, 6; extended ids start at 7
    src, tgt, oov = extended_ids(vocab, ["a", "x", "b", "y", "x"], ["y", "c", "x", "z"])
    assert src == [4, 7, 5, 8, 7] and oov == ["x", "y"]
    assert tgt == [8, 6, 7, UNK]  # z is in neither the vocabulary nor the source
    assert decode_extended(vocab, tgt, oov) == ["y", "c", "x", "<unk>"]


def test_copy_task_examples_are_reversed_and_shifted():
    src, tgt = make_example(random.Random(0), "N")
    assert len(src) == len(tgt)
    for s, t in zip(reversed(src), tgt):
        assert t == s if len(s) > 1 else ord(t) - ord("a") == (ord(s) - ord("a") + 1) % 20


@pytest.mark.slow
def test_trained_pointer_generator_copies_symbols_never_seen_in_training(tmp_path):
    """200 steps on short examples: the rare symbols of the test set (another pool than training's)
    come out in their right places; before training they do not."""
    from tfmr.seq2seq import PairVocab, Seq2SeqTrainer
    from tfmr.tasks import copytask as ct

    rng, vocab = random.Random(0), Vocab(ct.KNOWN)
    train = [make_example(rng, "R", p_rare=0.5, lengths=(3, 5)) for _ in range(4000)]
    test = [make_example(rng, "N", p_rare=0.5, lengths=(3, 5)) for _ in range(200)]
    cfg = ct.CopyTaskConfig()
    cfg.train.steps, cfg.train.warmup, cfg.train.lr, cfg.train.eval_every = 200, 20, 3e-3, 10**9
    cfg.train.threads = 0  # leave the test process's thread count alone
    pairs = [extended_ids(vocab, s, t)[:2] for s, t in train]
    trainer = Seq2SeqTrainer(
        cfg,
        PairVocab(vocab, vocab),
        pairs,
        pairs[:64],
        tmp_path,
        progress=False,
        log=lambda *a: None,
        make_model=lambda m: build_copy_model(m, UNK),
    )
    before = ct.accuracy(trainer.model, vocab, test, True, 8)["rare_acc"]
    trainer.fit()
    after = ct.accuracy(trainer.model, vocab, test, True, 8)
    assert after["rare_acc"] >= 0.95 and before < 0.5, (before, after)
