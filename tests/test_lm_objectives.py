"""RL on a metric for decoder-only language models: `train.objective=reinforce | self-critical |
mrt` in the language-model Trainer (the one loop). Each window's first half is the prompt, the rest
the reference continuation; the sampled continuation is rewarded against it on token ids."""

from __future__ import annotations

import json

import pytest
import torch

from tfmr import build_model, decode
from tfmr.config import ConfigError, ModelConfig, apply_override
from tfmr.objectives import (
    OBJECTIVES,
    SelfCritical,
    lm_batch,
    lm_task,
    sample_ids,
    sequence_logprobs,
)
from tfmr.train import Trainer


def lm(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(vocab_size=40, dim=32, layers=2, heads=2, context=24)).eval()


def test_lm_batch_splits_each_window_into_prompt_and_reference():
    x = torch.arange(20).view(2, 10)
    batch = lm_batch(SelfCritical(prompt=0.3), x, x + 1)
    assert batch["src_ids"].tolist() == [[0, 1, 2], [10, 11, 12]]
    assert batch["targets"].tolist() == [[3, 4, 5, 6, 7, 8, 9], [13, 14, 15, 16, 17, 18, 19]]
    tf = lm_batch(OBJECTIVES["teacher-forcing"](), x, x + 1)
    assert torch.equal(tf["input_ids"], x) and torch.equal(tf["targets"], x + 1)


def test_greedy_continuation_is_tfmr_decode_greedy():
    model, prompt = lm(), torch.randint(0, 40, (3, 5))
    ours = sample_ids(model, prompt, 7, bos=-1, eos=-1, pad=0, greedy=True)
    reference = decode.greedy(model, prompt, 7)[:, 5:]
    assert torch.equal(ours, reference)


def test_sampled_continuations_are_softmax_multinomial_draws_from_the_global_rng():
    """The objectives' sampler chooses through decode.Sampling and draws exactly what
    torch.multinomial(softmax(logits / T)) draws from the global RNG, step by step (the RNG the
    loop saves, so resumed runs stay bit-identical)."""
    model, prompt = lm(2), torch.randint(0, 40, (3, 5))
    torch.manual_seed(7)
    ours = sample_ids(model, prompt, 6, bos=-1, eos=-1, pad=0, temperature=0.8)
    torch.manual_seed(7)
    state, tokens, expected = model.start_state(3, 11), prompt, []
    with torch.no_grad():
        for _ in range(6):
            logits, state = model.step(tokens, state)
            expected.append(
                torch.multinomial(torch.softmax(logits.float() / 0.8, dim=-1), 1).squeeze(-1)
            )
            tokens = expected[-1][:, None]
    assert torch.equal(ours, torch.stack(expected, dim=1))


def test_sequence_logprobs_of_a_continuation_match_step_by_step_decoding():
    model, prompt, ys = lm(1), torch.randint(0, 40, (2, 4)), torch.randint(0, 40, (2, 6))
    got = sequence_logprobs(model, prompt, ys, bos=-1, eos=-1, needs_source=False)
    state = model.start_state(2, 10)
    logits, state = model.step(prompt, state)
    expected = torch.zeros(2)
    for t in range(6):
        expected += torch.log_softmax(logits, -1).gather(-1, ys[:, t : t + 1]).squeeze(-1)
        logits, state = model.step(ys[:, t : t + 1], state)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_scst_with_equal_rewards_has_no_gradient():
    """A reward the same for every sequence makes the self-critical advantage 0: loss and gradient 0."""
    model = lm(2).train()
    obj = SelfCritical(reward="exact", samples=2)
    obj.setup(model, lm_task(24))
    x = torch.randint(0, 40, (2, 12))
    batch = lm_batch(obj, x, x)
    batch["targets"] = torch.full_like(
        batch["targets"], 39
    )  # no continuation matches: every reward 0
    torch.manual_seed(0)
    model.zero_grad()
    loss = obj.loss(model, model, batch, 0).loss
    loss.backward()
    assert loss.item() == 0.0 and all(
        p.grad is None or not p.grad.any() for p in model.parameters()
    )


@pytest.mark.parametrize("kind", ["reinforce", "self-critical", "mrt"])
def test_the_language_model_trainer_takes_rl_objectives(tiny_cfg, tmp_path, kind):
    cfg = tiny_cfg
    for s in (
        "train.steps=3",
        "train.eval_every=3",
        "train.checkpoint_every=3",
        "train.batch_size=2",
        f"train.objective={kind}",
        "train.objective.reward=bleu",
        "train.objective.samples=2",
    ):
        apply_override(cfg, s)
    trainer = Trainer(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    assert trainer.step == 3 and type(trainer.objective) is OBJECTIVES[kind]
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 3 and all(v is not None for v in losses)


def test_a_language_model_refuses_scheduled_sampling(tiny_cfg, tmp_path):
    apply_override(tiny_cfg, "train.objective=two-pass")
    with pytest.raises(
        ConfigError,
        match="two-pass is for encoder-decoder models; a language model takes: "
        "teacher-forcing, reinforce, self-critical, mrt",
    ):
        Trainer(tiny_cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert not (tmp_path / "run" / "run.lock").exists()
