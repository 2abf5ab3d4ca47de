"""Training objectives against their references, on the same weights and the same random numbers.

The references, transcribed below in this file's own words from their code:

    tensor2tensor  tensor2tensor/utils/t2t_model.py `T2TModel.maybe_scheduled_sampling` with
                   `scheduled_sampling_method=parallel` (`num_passes` passes, each sampling from
                   the previous pass's logits and mixing with gold at the positions >= the pass
                   index, the earlier ones kept), and tensor2tensor/utils/scheduled_sampling.py
                   `sequential_scheduled_sampling` (one pass per position, the sample at i drawn
                   from logits conditioned on the tokens mixed before i)
    Nematus        nematus/mrt_utils.py `full_sampler` (duplicate samples dropped after sorting;
                   with `mrt_reference` the reference, unless sampled, replaces the last one) and
                   `mrt_cost` (softmax of alpha log P over each source's candidates, dotted with
                   the cost 1 - score, over the batch size)

How the random numbers line up. Both scheduled samplings draw, per pass or position, the samples
(torch.multinomial of the softmax, tf.multinomial in tensor2tensor) and then one uniform coin per
(row, position), from the global RNG in the same order as tensor2tensor. tfmr keeps gold where
u < eps and indexes u by the decoder input position t it decides; tensor2tensor samples where
u' < p = 1 - eps and indexes u' by the target position t - 1 (its model shifts the targets right).
So the reference is fed u' = 1 - u, one column over: the same numbers (1 - u is exact for torch's
uniforms). Nematus' target vocabulary has no <pad> or <s>; its sampler draws from the model's
distribution over its own vocabulary, which in tfmr's ids is those two ids at probability zero.
Its cost -log P is read from the model's softmax over all its ids, as tfmr's log p is (a model of
Nematus' own would normalise over its vocabulary only; docs/objectives.md lists the difference).
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from tfmr import Choice, ModelConfig, build_model
from tfmr.config import ConfigError
from tfmr.decode import beam_search, greedy
from tfmr.objectives import (
    REWARDS,
    MinimumRisk,
    ParallelScheduledSampling,
    ScheduledSampling,
    Task,
    TeacherForcing,
    WithoutSpecials,
    lm_task,
    replace_last,
    sample_ids,
)
from tfmr.seq2seq import BOS, EOS, PAD, collate

V, CONTEXT = 12, 16


def symbols(ids) -> list[str]:
    """Target ids -> symbols up to the first </s>, without <pad> and <s> (as a Vocab decodes)."""
    out = []
    for i in ids:
        if i == EOS:
            break
        if i not in (PAD, BOS):
            out.append(str(i))
    return out


TASK = Task(BOS, EOS, PAD, symbols, CONTEXT)


def _tiny(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        arch="encoder-decoder", vocab_size=V, dim=16, layers=2, heads=2, context=CONTEXT, pad_id=PAD
    )
    return build_model(cfg)


def _batch():
    """Four pairs of different lengths, so the targets are padded."""
    return collate(
        [
            ([5, 6, 7, 8], [8, 7, 6, 5, 4]),
            ([4, 9], [9, 4]),
            ([10, 11, 5], [5, 11, 10, 6]),
            ([6], [6]),
        ]
    )


def _real(batch) -> torch.Tensor:
    return batch["targets"] != -100  # (B, T): the positions the loss counts


# ----------------------------------------------------------------------------- tensor2tensor
def t2t_infer(model, src):
    """T2TModel.body + top on a target sequence (B, T): the decoder reads it shifted right (tfmr's
    <s> where tensor2tensor has a zero embedding), so the logits at i see targets < i."""

    def infer(targets):
        shifted = torch.cat([torch.full_like(targets[:, :1], BOS), targets[:, :-1]], dim=1)
        return model(src_ids=src, tgt_ids=shifted).logits  # (B, T, V)

    return infer


def t2t_sample(logits):
    """tf.multinomial over the last axis: one draw per row from softmax(logits)."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    return torch.multinomial(torch.softmax(flat, dim=-1), 1).view(logits.shape[:-1])


def t2t_parallel(infer, gold, first_logits, p_sample, num_passes, uniform):
    """maybe_scheduled_sampling, parallel: pass i samples every position from the previous pass's
    logits, mixes (sampled where uniform < p_sample), then keeps the previous targets at the
    timesteps before i (is_later_timestep) and runs the model again; the last pass's logits."""
    B, T = gold.shape
    logits, previous = first_logits, gold
    for i in range(num_passes):
        sampled = t2t_sample(logits)
        mixed = torch.where(uniform((B, T)) < p_sample, sampled, gold)
        later = torch.arange(T)[None, :] >= i
        previous = torch.where(later, mixed, previous)
        logits = infer(previous)
    return logits


def t2t_sequential(infer, gold, p_sample, uniform):
    """sequential_scheduled_sampling: tokens start at zero; at each timestep i the model runs on the
    tokens so far, the next token is sampled from its logits at i, mixed with gold[:, i] and
    written at i; a last pass on the finished tokens gives the logits of the loss."""
    B, T = gold.shape
    tokens = torch.zeros_like(gold)
    for i in range(T):
        sampled = t2t_sample(infer(tokens)[:, i])
        mixed = torch.where(uniform((B,)) < p_sample, sampled, gold[:, i])
        tokens = tokens.clone()
        tokens[:, i] = mixed
    return infer(tokens)


def t2t_loss(logits, targets):
    """The padded-cross-entropy mean over the real target positions (no label smoothing)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


def _gold(batch):
    """tensor2tensor's targets: y </s>, zero-padded (tfmr's <pad> is 0 too)."""
    t = batch["targets"]
    return torch.where(t == -100, torch.full_like(t, PAD), t)


def _tfmr_run(objective, model, batch, seed):
    objective.setup(model, TASK)
    torch.manual_seed(seed)
    return objective.loss(model, model, batch, 0)


@pytest.mark.parametrize("passes", [2, 3, 4, 6])
@pytest.mark.parametrize("eps", [0.375, 0.75])
def test_parallel_scheduled_sampling_equals_tensor2tensor(passes, eps):
    """tfmr `passes` = tensor2tensor num_passes + 1 (its count leaves out the teacher-forced pass)."""
    model, batch = _tiny(), _batch()
    ours = _tfmr_run(
        ParallelScheduledSampling(passes=passes, schedule="constant", k=eps), model, batch, 5
    )
    torch.manual_seed(5)
    with torch.no_grad():
        first = model(src_ids=batch["src_ids"], tgt_ids=batch["tgt_ids"]).logits

    def coins(shape):  # tfmr's u (input position t) as tensor2tensor's u' (target position t - 1)
        return 1 - torch.rand(shape).roll(-1, dims=1)

    infer = t2t_infer(model, batch["src_ids"])
    with torch.no_grad():
        want = t2t_parallel(infer, _gold(batch), first, 1 - eps, passes - 1, coins)
    real = _real(batch)
    assert torch.allclose(ours.logits[real], want[real], atol=1e-5, rtol=0)
    assert ours.loss.item() == pytest.approx(t2t_loss(want, batch["targets"]).item(), abs=1e-5)


def _spy(model, seen):
    def forward(**kw):
        seen.append(kw["tgt_ids"].clone())
        return model(**kw)

    return forward


def test_later_parallel_passes_keep_the_positions_earlier_passes_settled():
    """Pass k (0-based) re-mixes only input positions t > k: the tokens fed at t <= k are those the
    previous pass was fed."""
    model, batch = _tiny(), _batch()
    obj = ParallelScheduledSampling(passes=5, schedule="constant", k=0.3)
    obj.setup(model, TASK)
    seen = []
    torch.manual_seed(2)
    obj.loss(_spy(model, seen), model, batch, 0)
    assert len(seen) == 5 and torch.equal(seen[0], batch["tgt_ids"])
    for k in range(1, 4):
        assert torch.equal(seen[k + 1][:, : k + 1], seen[k][:, : k + 1])
    assert any(not torch.equal(seen[k + 1][:, k + 1 :], seen[k][:, k + 1 :]) for k in range(1, 4))


@pytest.mark.parametrize("eps", [0.375, 0.75])
def test_sequential_scheduled_sampling_equals_tensor2tensor(eps):
    model, batch = _tiny(), _batch()
    obj = ScheduledSampling(schedule="constant", k=eps, predict="sample", mode="sequential")
    ours = _tfmr_run(obj, model, batch, 7)
    torch.manual_seed(7)
    infer = t2t_infer(model, batch["src_ids"])
    with torch.no_grad():
        want = t2t_sequential(infer, _gold(batch), 1 - eps, lambda shape: 1 - torch.rand(shape))
    real = _real(batch)
    assert torch.allclose(ours.logits[real], want[real], atol=1e-5, rtol=0)
    assert ours.loss.item() == pytest.approx(t2t_loss(want, batch["targets"]).item(), abs=1e-5)


def test_sequential_with_no_gold_and_arg_max_feeds_the_greedy_decode():
    """eps = 0, arg-max: each input is the model's arg-max after its own earlier ones, which is
    greedy decoding (tfmr.decode.greedy with the cache, no end token)."""
    model, batch = _tiny(), _batch()
    obj = ScheduledSampling(schedule="constant", k=0.0, mode="sequential")
    obj.setup(model, TASK)
    seen = []
    obj.loss(_spy(model, seen), model, batch, 0)
    fed, gold = seen[-1], batch["tgt_ids"]
    start = torch.full((gold.shape[0], 1), BOS)
    want = greedy(model, start, gold.shape[1] - 1, src=batch["src_ids"])  # (B, T)
    model.train()
    real = gold != PAD
    assert torch.equal(fed[real], want[real]) and torch.equal(fed[~real], gold[~real])


def test_sequential_always_gold_is_teacher_forcing_exactly():
    model, batch = _tiny(), _batch()
    want = _tfmr_run(TeacherForcing(), model, batch, 1)
    want.loss.backward()
    want_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = _tfmr_run(
        ScheduledSampling(schedule="constant", k=1.0, mode="sequential"), model, batch, 1
    )
    got.loss.backward()
    assert torch.equal(got.loss, want.loss)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), want_grads))


def test_scheduled_sampling_mode_is_checked():
    with pytest.raises(ConfigError, match="valid: parallel, sequential"):
        ScheduledSampling(mode="exact")


# ----------------------------------------------------------------------------- the RL sampler
class Forced(torch.nn.Module):
    """A model whose every decoding step puts almost all its mass on <pad> and <s>."""

    needs_source = True

    def __init__(self, inner, push: float = 12.0):
        super().__init__()
        self.inner, self.push, self.cfg = inner, push, inner.cfg

    def start_state(self, *args, **kwargs):
        return self.inner.start_state(*args, **kwargs)

    def step(self, tokens, state):
        logits, state = self.inner.step(tokens, state)  # (B, V)
        bias = torch.zeros(logits.shape[-1])
        bias[[PAD, BOS]] = self.push
        return logits + bias, state


def _before_end(ids: torch.Tensor) -> torch.Tensor:
    """(N, L) True at the positions before each row's first </s> (all of a row without one)."""
    end = (ids == EOS).long()
    return (end.cumsum(1) - end) == 0


@pytest.mark.parametrize("greedy_", [False, True])
def test_the_rl_sampler_never_emits_pad_or_bos_before_the_end(greedy_):
    forced, src = Forced(_tiny()), _batch()["src_ids"].repeat_interleave(8, 0)
    torch.manual_seed(0)
    free = sample_ids(forced, src, 10, BOS, EOS, PAD, greedy_)  # the specials allowed: they win
    assert bool(((free == PAD) | (free == BOS))[_before_end(free)].any())
    torch.manual_seed(0)
    ids = sample_ids(WithoutSpecials(forced, TASK.specials), src, 10, BOS, EOS, PAD, greedy_)
    before = _before_end(ids)
    assert not bool(((ids == PAD) | (ids == BOS))[before].any())
    assert bool((ids[~before & (ids != EOS)] == PAD).all())  # after </s>: padding only


def _specials_before_the_end(ids: torch.Tensor) -> bool:
    return bool(((ids == PAD) | (ids == BOS))[_before_end(ids)].any())


def test_the_rl_objectives_decode_without_the_task_specials():
    """Samples, the greedy baseline and MRT's beam n-best, from a model pushed towards them."""
    forced, src = Forced(_tiny()), _batch()["src_ids"]
    obj = MinimumRisk(samples=4, candidates="beam")
    obj.setup(forced.inner, TASK)
    torch.manual_seed(0)
    for greedy_ in (False, True):
        _, ids = obj.draw(forced, src, 6, 10, greedy=greedy_)
        assert not _specials_before_the_end(ids)
    assert not _specials_before_the_end(obj.nbest(forced, src, 10))
    start = torch.full((src.shape[0], 1), BOS)
    free = beam_search(forced, start, 4, 10, eos_id=EOS, src=src, n_best=4, pad_id=PAD)
    assert _specials_before_the_end(free.ids[:, :, 1:].flatten(0, 1))  # unmasked, they win
    assert TASK.specials == (PAD, BOS) and lm_task(8).specials == ()


# ----------------------------------------------------------------------------- Nematus MRT
def nematus_sample(model, src, max_len):
    """Nematus' random sampler, batched: from <s>, each step draws from softmax over its target
    vocabulary (here: every id but <pad> and <s>, which it does not have) until all rows ended."""
    state = model.start_state(src.shape[0], max_len, src=src)
    tokens, rows, done = (
        torch.full((src.shape[0], 1), BOS),
        [],
        torch.zeros(src.shape[0], dtype=bool),
    )
    for _ in range(max_len):
        logits, state = model.step(tokens, state)
        logits = logits.float().index_fill(-1, torch.tensor([PAD, BOS]), float("-inf"))
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)
        rows.append(torch.where(done, torch.full_like(nxt, PAD), nxt))
        done = done | (nxt == EOS)
        if bool(done.all()):
            break
        tokens = nxt[:, None]
    seqs = torch.stack(rows, 1).tolist()
    return [s[: s.index(EOS) + 1] if EOS in s else s for s in seqs]  # each up to its </s>


def nematus_candidates(samples, refs, n, sample_way):
    """full_sampler: per source, the sampled candidates sorted with duplicates dropped (random
    sampling; a beam's n-best stay as they are), then the reference, if it is not among them,
    appended and the candidate before it popped."""
    out = []
    for i, ref in enumerate(refs):
        cands = [list(s) for s in samples[i * n : (i + 1) * n]]
        if sample_way == "randomly_sample":
            cands = [c for c, _ in itertools.groupby(sorted(cands))]
        if ref not in cands:
            cands.append(ref)
            cands.pop(-2)
        out.append(cands)
    return out


def nematus_cost(model, src, cands):
    """-log P(y|x) of each candidate: the sum of token log-probabilities through its </s>."""
    L = max(len(c) for c in cands)
    y = torch.tensor([c + [PAD] * (L - len(c)) for c in cands])
    mask = torch.tensor([[1.0] * len(c) + [0.0] * (L - len(c)) for c in cands])
    shifted = torch.cat([torch.full_like(y[:, :1], BOS), y[:, :-1]], dim=1)
    logp = torch.log_softmax(model(src_ids=src, tgt_ids=shifted).logits.float(), dim=-1)
    return -(logp.gather(-1, y[..., None]).squeeze(-1) * mask).sum(1)


def nematus_mrt(model, src, refs, samples, n, alpha, reward, sample_way):
    """mrt_cost over full_sampler's candidates: per source softmax(-alpha cost) over its
    candidates, dotted with 1 - score, summed and divided by the batch size."""
    sets = nematus_candidates(samples, refs, n, sample_way)
    src_rep = torch.cat([src[i : i + 1].expand(len(c), -1) for i, c in enumerate(sets)])
    cost = nematus_cost(model, src_rep, [c for s in sets for c in s])
    risk, start = 0.0, 0
    for i, cands in enumerate(sets):
        q = torch.softmax(-alpha * cost[start : start + len(cands)], dim=0)
        score = torch.tensor([reward(symbols(c), [symbols(refs[i])]) for c in cands])
        risk, start = risk + (q * (1 - score)).sum(), start + len(cands)
    return risk / len(sets), sets


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("candidates", ["sample", "beam"])
def test_mrt_with_the_reference_replacing_the_last_candidate_equals_nematus(candidates):
    """tfmr's risk is E_Q[-r], Nematus' E_Q[1 - r]: the same gradients, the loss 1 lower."""
    model, batch = _tiny(), _batch()
    n, alpha = 4, 0.5
    obj = MinimumRisk(
        reward="per",
        samples=n,
        alpha=alpha,
        candidates=candidates,
        with_reference=True,
        reference="replace_last",
    )
    ours = _tfmr_run(obj, model, batch, 11)
    ours_grads = _grads(model, ours.loss)
    src, targets = batch["src_ids"], batch["targets"]
    refs = [[i for i in row if i != -100] for row in targets.tolist()]
    max_len = min(max(len(r) for r in refs) + 5, CONTEXT)
    src_n = src.repeat_interleave(n, 0)
    torch.manual_seed(11)
    if candidates == "sample":
        model.eval()
        with torch.no_grad():
            samples = nematus_sample(model, src_n, max_len)
        model.train()
        way = "randomly_sample"
    else:  # the n-best come from the beam search both use; what is compared is the set and risk
        best = obj.nbest(model, src, max_len).tolist()
        samples = [s[: s.index(EOS) + 1] if EOS in s else s for s in best]
        way = "beam_search"
    want, sets = nematus_mrt(model, src, refs, samples, n, alpha, REWARDS["per"], way)
    assert any(len(s) > 1 for s in sets)
    replaced = [refs[i] not in samples[i * n : (i + 1) * n] for i in range(len(refs))]
    assert any(replaced)  # the reference took a candidate's place somewhere
    assert ours.loss.item() + 1 == pytest.approx(want.item(), abs=1e-5)
    for a, b in zip(ours_grads, _grads(model, want)):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_replace_last_picks_nematus_victim():
    rows = [(7, 5, EOS), (4, EOS), (9, EOS), (4, EOS)]
    assert replace_last(rows, (9, EOS), sort=True) is None  # the reference was sampled
    assert replace_last(rows, (6, EOS), sort=True) == (9, EOS)  # the greatest in id order
    assert replace_last(rows, (6, EOS), sort=False) == (9, EOS)  # the last distinct
    assert replace_last(rows[:2], (6, EOS), sort=False) == (4, EOS)
    assert replace_last(rows[:2], (6, EOS), sort=True) == (7, 5, EOS)


def test_mrt_reference_modes_keep_or_grow_the_set():
    model, batch = _tiny(), _batch()
    B, n = batch["src_ids"].shape[0], 3
    ys = torch.full((B, n, 2), 9)
    ys[..., 1] = EOS  # every candidate "9 </s>", which no reference is
    for mode, size in (("append", n + 1), ("replace_last", n)):
        obj = MinimumRisk(samples=n, with_reference=True, reference=mode)
        obj.setup(model, TASK)
        out = obj.add_reference(ys, batch["targets"])
        assert out.shape[:2] == (B, size)
        gold = torch.where(batch["targets"] == -100, PAD, batch["targets"])
        for b in range(B):
            assert any(torch.equal(row[: gold.shape[1]], gold[b]) for row in out[b])
    with pytest.raises(ConfigError, match="valid: append, replace_last"):
        MinimumRisk(reference="first")


def test_mrt_replace_last_is_accepted_as_a_config_option():
    from tfmr.config import check_options
    from tfmr.objectives import OBJECTIVES

    check_options(Choice("mrt", reference="replace_last"), OBJECTIVES, "train.objective")
    check_options(Choice("scheduled", mode="sequential"), OBJECTIVES, "train.objective")
    with pytest.raises(ConfigError, match="has no option 'mode'"):
        check_options(Choice("parallel", mode="sequential"), OBJECTIVES, "train.objective")
