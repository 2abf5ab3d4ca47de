"""Sampling: filters keep the right tokens; limits reduce to greedy; seeds reproduce."""

from __future__ import annotations

import torch

from tfmr import ModelConfig, build_model
from tfmr.decode import eval_mode, filter_logits, greedy, sample


def _model():
    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=30, dim=32, layers=2, heads=2, context=16)).eval()


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [
        [True, False, False, False]
    ]
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, True, True, False]]


def test_min_p_drops_tokens_below_a_share_of_the_best():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.isfinite(filter_logits(logits, min_p=0.5)).tolist() == [[True, True, False, False]]


def test_top_k_1_and_tiny_top_p_equal_greedy():
    model = _model()
    prompt = torch.tensor([[1, 2, 3]])
    g = greedy(model, prompt, 20)
    assert torch.equal(sample(model, prompt, 20, temperature=1.0, top_k=1, seed=5), g)
    assert torch.equal(sample(model, prompt, 20, temperature=1.0, top_p=1e-6, seed=7), g)


def test_greedy_is_the_argmax_of_the_full_forward():
    model = _model()
    ids = greedy(model, torch.tensor([[4, 5]]), 10)
    for t in range(2, ids.shape[1]):
        assert ids[0, t] == model(ids[:, :t]).logits[0, -1].argmax()


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    model = _model()
    prompt = torch.tensor([[1]])
    a = sample(model, prompt, 30, temperature=1.5, seed=1)
    assert torch.equal(a, sample(model, prompt, 30, temperature=1.5, seed=1))
    assert not torch.equal(a, sample(model, prompt, 30, temperature=1.5, seed=2))


def test_generation_past_the_context_slides_the_window():
    model = _model()
    ids = greedy(model, torch.tensor([[1, 2]]), 40)  # context is 16
    assert ids.shape == (1, 42)


def test_next_token_probs_is_what_choose_samples_from():
    """next_token_probs: the softmax of the tempered logits after the filters, renormalised over
    the kept tokens (0 elsewhere); one-hot arg-max at temperature 0; and `choose` draws from it."""
    from tfmr.decode import choose, filter_logits, next_token_probs

    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    p = next_token_probs(logits, 0.7, top_k=10, top_p=0.8, min_p=0.02)
    kept = torch.isfinite(filter_logits(logits / 0.7, 10, 0.8, 0.02))
    base = torch.softmax(logits / 0.7, -1)
    torch.testing.assert_close(
        p, torch.where(kept, base / (base * kept).sum(-1, keepdim=True), 0.0)
    )
    assert torch.equal(
        next_token_probs(logits, 0.0), torch.nn.functional.one_hot(logits.argmax(-1), 50).float()
    )
    gen = torch.Generator().manual_seed(1)
    draws = torch.stack([choose(logits, 0.7, 10, 0.8, 0.02, gen) for _ in range(200)])  # (200, 3)
    assert bool(kept.gather(1, draws.T).all())  # never a filtered token


def test_one_next_token_chooser_for_decode_fastdecode_and_the_objectives():
    """decode.Sampling is the chooser: fast decoding and the training objectives take it from
    decode.py; its processors and its choice are decode.process followed by decode.choose."""
    from tfmr import decode, fastdecode, objectives

    assert fastdecode.Sampling is decode.Sampling and objectives.Sampling is decode.Sampling
    torch.manual_seed(0)
    logits, seen = torch.randn(3, 50) * 3, torch.randint(0, 50, (3, 6))
    chooser = decode.Sampling(0.7, top_k=10, top_p=0.9, repetition=1.3, ngram=2)
    got = chooser.choose(logits, seen, torch.Generator().manual_seed(5))
    want = decode.choose(
        decode.process(logits, seen, 1.3, 2), 0.7, 10, 0.9, None, torch.Generator().manual_seed(5)
    )
    assert torch.equal(got, want)
    seen = torch.cat(
        [logits.argmax(-1, keepdim=True), seen], dim=1
    )  # every row has seen its best token
    greedy_ = decode.Sampling(0.0, repetition=100.0).choose(logits, seen)
    assert torch.equal(greedy_, decode.repetition_penalty(logits, seen, 100.0).argmax(-1))
    assert not (greedy_ == logits.argmax(-1)).any()  # the penalty was applied before the arg-max


def test_the_exponential_race_draws_from_the_distribution():
    """Fast decoding's draw (argmax of p / Exp(1), compiled into its step) samples p: the frequencies
    of 20,000 draws are within 0.015 of p, and a token of probability 0 is never drawn."""
    from tfmr.decode import exponential_race

    torch.manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    freq = (
        torch.bincount(exponential_race(p.expand(20_000, 5).clone()), minlength=5).float() / 20_000
    )
    assert (freq - p).abs().max() < 0.015 and freq[4] == 0


def test_decoding_puts_every_module_in_eval_mode_and_leaves_an_eval_model_untouched():
    model = _model().eval()
    model.blocks[0].train()  # one submodule left training: dropout would sample in it
    eval_mode(model)
    assert not any(m.training for m in model.modules())
    model.train()
    greedy(model, torch.tensor([[1, 2, 3]]), 2)
    assert not any(m.training for m in model.modules())
