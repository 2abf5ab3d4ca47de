"""Training objectives: scheduled sampling (three kinds), guided attention, RL on a metric."""

from __future__ import annotations

import math

import pytest
import torch
from test_seq2seq import VOCAB, Run, _pairs

from tfmr import Choice, ModelConfig, build_model
from tfmr.config import ConfigError
from tfmr.objectives import (
    OBJECTIVES,
    REWARDS,
    GuidedAttention,
    ParallelScheduledSampling,
    Schedule,
    ScheduledSampling,
    Task,
    TeacherForcing,
    TwoPassScheduledSampling,
    guided_weights,
    mrt_loss,
    predict_tokens,
    reinforce_loss,
    scst_advantage,
    sequence_logprobs,
)
from tfmr.seq2seq import BOS, EOS, PAD, Seq2SeqTrainer, collate

TASK = Task(BOS, EOS, PAD, VOCAB.tgt.decode, 16)


def _tiny(dtype=torch.float32, kernel="sdpa", seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        arch="encoder-decoder",
        vocab_size=12,
        dim=16,
        layers=2,
        heads=2,
        context=16,
        pad_id=PAD,
        kernel=Choice(kernel),
    )
    return build_model(cfg).to(dtype)


def _batch():
    return collate([([5, 6, 7], [7, 6, 5]), ([4, 8], [8, 4]), ([9], [9])])


def _loss_and_grads(model, objective, batch, step=0):
    objective.setup(model, TASK)
    model.zero_grad()
    torch.manual_seed(1)
    loss = objective.loss(model, model, batch, step).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


# ----------------------------------------------------------------------------- scheduled sampling
@pytest.mark.parametrize(
    "objective",
    [
        ScheduledSampling(schedule="constant", k=1.0),
        ScheduledSampling(schedule="constant", k=1.0, predict="sample"),
        ParallelScheduledSampling(passes=3, schedule="constant", k=1.0),
        TwoPassScheduledSampling(schedule="constant", k=1.0, mix="softmax"),
        TwoPassScheduledSampling(schedule="constant", k=1.0, mix="top-k", first_grad=True),
        TwoPassScheduledSampling(schedule="constant", k=1.0, mix="argmax"),
    ],
    ids=[
        "scheduled",
        "scheduled-sample",
        "parallel",
        "two-pass-softmax",
        "two-pass-topk-grad",
        "two-pass-argmax",
    ],
)
def test_always_gold_is_teacher_forcing_exactly(objective):
    model, batch = _tiny(), _batch()
    want_loss, want = _loss_and_grads(model, TeacherForcing(), batch)
    got_loss, got = _loss_and_grads(model, objective, batch)
    assert torch.equal(got_loss, want_loss)
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize(
    "objective",
    [
        ScheduledSampling(schedule="constant", k=0.0),
        ParallelScheduledSampling(schedule="constant", k=0.0),
        TwoPassScheduledSampling(schedule="constant", k=0.0),
    ],
)
def test_never_gold_changes_the_loss(objective):
    model, batch = _tiny(), _batch()
    want, _ = _loss_and_grads(model, TeacherForcing(), batch)
    got, _ = _loss_and_grads(model, objective, batch)
    assert torch.isfinite(got) and not torch.equal(got, want)


def test_scheduled_sampling_feeds_the_previous_prediction():
    """With eps = 0 the second pass's inputs are <s> then the first pass's arg-max at t - 1."""
    model, batch = _tiny(), _batch()
    seen = []
    real = model.forward

    def spy(**kw):
        seen.append(kw["tgt_ids"].clone())
        return real(**kw)

    obj = ScheduledSampling(schedule="constant", k=0.0)
    obj.setup(model, TASK)
    obj.loss(spy, model, batch, 0)
    first = real(batch["src_ids"], batch["tgt_ids"]).logits.argmax(-1)
    gold, fed = batch["tgt_ids"], seen[1]
    assert torch.equal(seen[0], gold)
    assert torch.equal(fed[:, 0], gold[:, 0])
    real_pos = gold[:, 1:] != PAD
    assert torch.equal(fed[:, 1:][real_pos], first[:, :-1][real_pos])
    assert torch.equal(fed[:, 1:][~real_pos], gold[:, 1:][~real_pos])  # padding stays padding


def test_predicted_tokens_are_the_arg_max_or_softmax_multinomial_draws():
    """Scheduled sampling's predictions choose through decode.Sampling: the arg-max, or exactly
    the draws torch.multinomial(softmax(logits / T)) makes from the global RNG."""
    logits = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(4)) * 2
    assert torch.equal(predict_tokens(logits, "argmax"), logits.argmax(-1))
    torch.manual_seed(3)
    ours = predict_tokens(logits, "sample", 0.9)
    torch.manual_seed(3)
    probs = torch.softmax(logits.float() / 0.9, dim=-1)  # (B, T, V)
    assert torch.equal(ours, torch.multinomial(probs.flatten(0, 1), 1).view(2, 5))


def test_schedules_reproduce_the_issue_numbers():
    assert Schedule("inverse-sigmoid", k=10)(0) == pytest.approx(10 / 11)
    assert round(Schedule("exponential", k=0.9999)(10000), 4) == 0.3679
    lin = Schedule("linear", k=1.0, c=0.01, eps_min=0.2)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.5) and lin(80) == 0.2 and lin(10**6) == 0.2
    assert Schedule("inverse-sigmoid", k=10)(10**6) == 0.0  # no overflow
    with pytest.raises(ConfigError, match="valid schedules: constant, linear"):
        Schedule("cosine")


# ----------------------------------------------------------------------------- guided attention
def test_guided_attention_weights_match_the_issue():
    w = guided_weights(5, 5, 0.4)
    assert w.shape == (5, 5)
    assert [round(v, 4) for v in w[0].tolist()] == [0.0, 0.1175, 0.3935, 0.6753, 0.8647]
    w = guided_weights(3, 6, 0.4)  # 3 source, 6 target positions: rows t, columns n
    assert w.shape == (6, 3)
    assert [round(v, 4) for v in w[0].tolist()] == [0.0, 0.2934, 0.7506]


def _attention(rows, S, T, H=2):
    """(B, H, T, S) attention with all mass on column rows[t]."""
    a = torch.zeros(1, H, T, S)
    for t, n in enumerate(rows):
        a[0, :, t, n] = 1.0
    return a


def test_guided_loss_is_small_on_the_diagonal_and_large_on_the_antidiagonal():
    g = GuidedAttention(1.0, sigma=0.2)
    g.layers, g.heads = [0], [0, 1]
    src, tgt = torch.tensor([[5, 6, 7, 8, 9, 10]]), torch.full((1, 6), 4)
    from tfmr.model import Output

    diag = g.loss(Output(None, cross_attentions=[_attention(range(6), 6, 6)]), src, tgt, PAD)
    anti = g.loss(
        Output(None, cross_attentions=[_attention(range(5, -1, -1), 6, 6)]), src, tgt, PAD
    )
    assert diag < 1e-6 and anti > 0.1  # the mean over N x T entries: at most 1 / N = 0.167 here


def test_guided_loss_excludes_padding():
    """A padded row gives the same loss as the unpadded row alone, whatever sits in the padding."""
    g = GuidedAttention(1.0, sigma=0.4)
    g.layers, g.heads = [0], [0]
    from tfmr.model import Output

    torch.manual_seed(0)
    a = torch.softmax(torch.randn(1, 1, 3, 4), -1)
    alone = g.loss(
        Output(None, cross_attentions=[a]),
        torch.tensor([[5, 6, 7, 8]]),
        torch.tensor([[4, 4, 2]]),
        PAD,
    )
    padded_a = torch.rand(1, 1, 5, 6)  # junk everywhere, then the real block
    padded_a[:, :, :3, :4] = a
    src = torch.tensor([[5, 6, 7, 8, PAD, PAD]])
    tgt = torch.tensor([[4, 4, 2, -100, -100]])
    padded = g.loss(Output(None, cross_attentions=[padded_a]), src, tgt, PAD)
    torch.testing.assert_close(padded, alone)


def test_guided_attention_refuses_a_kernel_without_weights():
    g = GuidedAttention(1.0)
    with pytest.raises(ConfigError, match="SDPA kernel does not give; set model.kernel=eager"):
        g.setup(_tiny(kernel="sdpa"))
    g.setup(_tiny(kernel="eager"))
    assert g.layers == [0, 1] and g.heads == [0, 1]
    with pytest.raises(ConfigError, match="indices 0..1"):
        GuidedAttention(1.0, heads="0,5").setup(_tiny(kernel="eager"))


# ----------------------------------------------------------------------------- RL
def test_reinforce_pushes_probability_toward_the_better_action():
    """Two actions, rewards 1 and 0, baseline 0.5: either sampled action moves p(a0) up."""
    for action, reward in ((0, 1.0), (1, 0.0)):
        logits = torch.zeros(2, requires_grad=True)
        logp = torch.log_softmax(logits, 0)[action]
        reinforce_loss(logp[None], torch.tensor([reward]), 0.5).backward()
        with torch.no_grad():
            after = torch.softmax(logits - 0.1 * logits.grad, 0)
        assert after[0] > 0.5


def test_scst_advantage_and_direction():
    r_sample, r_greedy = torch.tensor([0.8, 0.1]), torch.tensor([0.5, 0.5])
    assert torch.allclose(scst_advantage(r_sample, r_greedy), torch.tensor([0.3, -0.4]))
    logits = torch.zeros(2, requires_grad=True)  # action 0 sampled, reward above the greedy one's
    logp = torch.log_softmax(logits, 0)[:1]
    (-(scst_advantage(r_sample[:1], r_greedy[:1]) * logp).mean()).backward()
    assert logits.grad[0] < 0 < logits.grad[1]


def test_mrt_gradient_matches_finite_differences():
    model = _tiny(torch.float64)
    src = torch.tensor([[5, 6, 7], [4, 8, PAD]]).repeat_interleave(3, 0)  # 2 sources x 3 candidates
    ys = torch.tensor(
        [
            [7, 6, 5, EOS],
            [7, 5, EOS, PAD],
            [6, EOS, PAD, PAD],
            [8, 4, EOS, PAD],
            [4, EOS, PAD, PAD],
            [8, 8, 8, 8],
        ]
    )
    reward = torch.tensor([[1.0, 0.4, 0.1], [1.0, 0.3, 0.0]], dtype=torch.float64)

    def risk():
        logp = sequence_logprobs(model, src, ys, BOS, EOS).view(2, 3)
        return mrt_loss(logp, reward, alpha=0.5)

    model.zero_grad()
    risk().backward()
    params = [model.tok_emb.weight, model.blocks[0].cross.q_proj.weight, model.lm_head.weight]
    for p in params:
        for idx in [(5, 0), (7, 3), (2, 1)]:
            with torch.no_grad():
                old = p[idx].item()
                p[idx] = old + 1e-6
                up = risk().item()
                p[idx] = old - 1e-6
                down = risk().item()
                p[idx] = old
            assert p.grad[idx].item() == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-9)


def test_mrt_q_renormalises_p_alpha_over_the_set():
    logp = torch.tensor([[math.log(0.5), math.log(0.2), math.log(0.1)]])
    reward = torch.tensor([[1.0, 0.0, 0.5]])
    q = torch.tensor([0.5, 0.2, 0.1]) ** 0.5
    q = q / q.sum()
    assert mrt_loss(logp, reward, alpha=0.5).item() == pytest.approx(-(q * reward[0]).sum().item())
    masked = mrt_loss(logp, reward, alpha=1.0, mask=torch.tensor([[True, True, False]]))
    assert masked.item() == pytest.approx(-0.5 / 0.7)


def test_rewards():
    import sacrebleu

    hyp, refs = ["AH0", "B", "K", "D"], [["AH0", "B", "K", "D", "E"], ["X", "Y"]]
    want = sacrebleu.sentence_bleu("AH0 B K D", ["AH0 B K D E", "X Y"], tokenize="none").score / 100
    assert REWARDS["bleu"](hyp, refs) == want
    assert REWARDS["per"](hyp, refs) == pytest.approx(1 - 1 / 5)
    assert REWARDS["exact"](hyp, refs) == 0.0 and REWARDS["exact"](["X", "Y"], refs) == 1.0


# ----------------------------------------------------------------------------- the trainer
def _run(kind=None, guided=0.0, steps=3, **options):
    cfg = Run()
    cfg.model.dim, cfg.model.heads, cfg.model.layers, cfg.model.encoder_layers = 16, 2, 1, 1
    cfg.train.steps, cfg.train.batch_size, cfg.train.log_every = steps, 8, 1
    if kind:
        cfg.train.objective = Choice(kind, **options)
    if guided:
        cfg.train.guided_attention, cfg.model.kernel = guided, Choice("eager")
    return cfg


OPTIONS = {
    "scheduled": {"k": 0.5, "schedule": "constant", "predict": "sample"},
    "two-pass": {"k": 0.5, "schedule": "constant"},
    "parallel": {"k": 0.5, "schedule": "constant", "passes": 3},
    "reinforce": {"samples": 2},
    "self-critical": {"samples": 2, "reward": "per"},
    "mrt": {"samples": 3, "reward": "exact"},
    "mrt-beam": {"samples": 3, "candidates": "beam", "with_reference": True},
}


@pytest.mark.parametrize("kind", list(OBJECTIVES) + ["mrt-beam"])
def test_every_objective_trains_a_few_steps(kind, tmp_path):
    trainer = Seq2SeqTrainer(
        _run(kind.split("-beam")[0], **OPTIONS.get(kind, {})),
        VOCAB,
        _pairs(40),
        _pairs(8, seed=9),
        tmp_path,
        progress=False,
        log=lambda *a: None,
    )
    trainer.fit()
    assert trainer.step == 3 and all(math.isfinite(r["loss"]) for r in trainer.history)


@pytest.mark.parametrize("kind", ["teacher-forcing", "scheduled"])
def test_guided_attention_composes_and_adds_to_the_loss(kind, tmp_path):
    losses = []
    for guided in (0.0, 5.0):
        cfg = _run(kind, guided=guided, steps=1, **OPTIONS.get(kind, {}))
        cfg.model.kernel = Choice("eager")
        torch.manual_seed(0)
        trainer = Seq2SeqTrainer(
            cfg,
            VOCAB,
            _pairs(40),
            _pairs(8, seed=9),
            tmp_path / str(guided),
            progress=False,
            log=lambda *a: None,
        )
        trainer.fit()
        losses.append(trainer.history[0]["loss"])
    assert losses[1] > losses[0]


def test_objective_config_is_checked_at_start(tmp_path):
    def start(cfg):
        Seq2SeqTrainer(
            cfg,
            VOCAB,
            _pairs(10),
            _pairs(4),
            tmp_path,
            progress=False,
            log=lambda *a: None,
            overwrite=True,
        )

    with pytest.raises(ConfigError, match="valid kinds: teacher-forcing, scheduled, two-pass"):
        start(_run("schedueld"))
    with pytest.raises(ConfigError, match="has no option 'kk'; valid options: schedule, k, c"):
        start(_run("scheduled", kk=1))
    with pytest.raises(ConfigError, match="valid rewards: bleu, per, exact"):
        start(_run("mrt", reward="rouge"))
    cfg = _run(guided=1.0)
    cfg.model.kernel = Choice("sdpa")
    with pytest.raises(ConfigError, match="set model.kernel=eager"):
        start(cfg)
    with pytest.raises(ConfigError, match="does not compute one"):
        start(_run("mrt", guided=1.0))


@pytest.mark.parametrize("kind", ["scheduled", "reinforce"])
def test_resume_is_bit_identical_with_an_objective(kind, tmp_path):
    def run(out, steps, resume=False):
        cfg = _run(kind, steps=steps, **OPTIONS[kind])
        cfg.model.dropout = 0.1
        cfg.train.checkpoint_every = 2
        trainer = Seq2SeqTrainer(
            cfg,
            VOCAB,
            _pairs(40),
            _pairs(8, seed=9),
            out,
            resume=resume,
            progress=False,
            log=lambda *a: None,
        )
        trainer.fit()
        return trainer

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4, resume=True)
    assert resumed.step == 4
    if kind == "reinforce":
        assert resumed.objective.baseline == straight.objective.baseline
    for (name, p), q in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        assert torch.equal(p, q), name
