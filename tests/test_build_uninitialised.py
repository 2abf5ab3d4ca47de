"""builder.build_uninitialised: the same model as build_model (names, shapes, tied weights,
derived tensors such as position tables, ALiBi slopes and retention decays), without drawing a
single random number (the loaders replace every parameter next)."""

from __future__ import annotations

import pytest
import torch

from tfmr import ModelConfig, build_model
from tfmr.builder import build_uninitialised
from tfmr.config import Choice

CONFIGS = {
    "gpt2-like": ModelConfig(vocab_size=40, dim=32, layers=2, heads=4, context=16),
    "alibi, retention hybrid": ModelConfig(
        vocab_size=40,
        dim=32,
        layers=3,
        heads=4,
        context=16,
        pos=Choice("alibi"),
        mixer_pattern="retention,attention,retention",
    ),
    "encoder-decoder, sinusoidal": ModelConfig(
        arch="encoder-decoder",
        vocab_size=40,
        dim=32,
        layers=1,
        heads=4,
        context=16,
        pos=Choice("sinusoidal"),
    ),
    "moe, rope": ModelConfig(
        vocab_size=40,
        dim=32,
        layers=1,
        heads=4,
        context=16,
        pos=Choice("rope"),
        ffn=Choice("moe", experts=4, top_k=2),
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_model_without_random_draws(name):
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    reference = build_model(cfg)
    rng = torch.random.get_rng_state()
    model = build_uninitialised(cfg)
    assert torch.equal(torch.random.get_rng_state(), rng)  # nothing was drawn
    ours, theirs = model.state_dict(), reference.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    params = {n for n, _ in reference.named_parameters(remove_duplicate=False)}
    for n, t in theirs.items():  # buffers (position tables, decays, counters) are computed as usual
        if n not in params:
            assert torch.equal(ours[n], t), n
    if cfg.tie_embeddings:
        assert model.lm_head.weight is model.tok_emb.weight
    for a, b in zip(
        model.modules(), reference.modules()
    ):  # tensors held outside the state dict (ALiBi)
        for attr in getattr(type(a), "float32", ()):
            assert torch.equal(getattr(a, attr), getattr(b, attr))
    model.load_state_dict(reference.state_dict())
    ids = torch.randint(0, 40, (2, 8))
    with torch.no_grad():
        if cfg.arch == "encoder-decoder":
            assert torch.equal(model.eval()(ids, ids).logits, reference.eval()(ids, ids).logits)
        else:
            assert torch.equal(model.eval()(ids).logits, reference.eval()(ids).logits)
