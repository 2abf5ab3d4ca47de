"""Beam search and the decoders' identities: beam 1 is greedy, a wide enough beam is exhaustive
search, scores are what the model says, batches equal one-by-one decoding, and the same holds
for encoder-decoder models."""

from __future__ import annotations

import itertools

import pytest
import torch

from tfmr import ModelConfig, build_model
from tfmr.config import Choice
from tfmr.decode import beam_search, greedy, sample


def _lm(seed=0, vocab=40, context=48):
    torch.manual_seed(seed)
    model = build_model(
        ModelConfig(vocab_size=vocab, dim=32, layers=2, heads=4, context=context)
    ).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(
            8.0
        )  # peaky distributions: ties between hypotheses become unlikely
    return model


def _seq2seq(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        arch="encoder-decoder",
        vocab_size=30,
        dim=32,
        layers=2,
        heads=4,
        context=32,
        pad_id=0,
        pos=Choice("sinusoidal"),
    )
    return build_model(cfg).eval()


def _log_prob(model, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Sum of the model's log-probs of ids[:, prompt_len:] given what precedes, (B,)."""
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
    return picked[:, prompt_len - 1 :].sum(-1)


def test_beam_width_1_equals_greedy():
    model = _lm()
    ids = torch.tensor([[3, 9, 4], [7, 7, 1]])
    assert torch.equal(beam_search(model, ids, 1, 20), greedy(model, ids, 20))


def test_beam_width_1_with_eos_and_early_stopping_equals_greedy():
    model = _lm(1)
    ids = torch.tensor([[5, 6, 7, 8]])
    eos = int(greedy(model, ids, 12)[0, 4 + 5])  # greedy's 6th token
    g = greedy(model, ids, 12, eos_id=eos)
    assert g.shape[1] <= 4 + 6 and g[0, -1] == eos
    assert torch.equal(beam_search(model, ids, 1, 12, eos_id=eos, early_stopping=True), g)


def test_a_beam_as_wide_as_every_prefix_is_exhaustive_search():
    """With K >= V^(n-1) beams no prefix is ever dropped, so the best of K hypotheses of n tokens
    is the best of all V^n sequences, and the n-best list is the top of the exhaustive ranking."""
    vocab, n = 6, 3
    model = _lm(2, vocab=vocab, context=8)
    prompt = torch.tensor([[1, 4]])
    every = torch.tensor(list(itertools.product(range(vocab), repeat=n)))  # (216, 3)
    scores = _log_prob(model, torch.cat([prompt.expand(len(every), -1), every], 1), 2)
    order = scores.argsort(descending=True)
    got = beam_search(model, prompt, vocab ** (n - 1), n, length_penalty=0.0, n_best=5)
    assert torch.equal(got.ids[0, :, 2:], every[order[:5]])
    torch.testing.assert_close(got.scores[0], scores[order[:5]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 1.7])
def test_n_best_scores_are_the_models_log_probs_over_length_to_the_penalty(length_penalty):
    model = _lm(3)
    ids = torch.tensor([[2, 8, 5], [9, 1, 1]])
    eos = int(torch.mode(beam_search(model, ids, 4, 10, n_best=4).ids[..., 3:].flatten()).values)
    got = beam_search(
        model, ids, 4, 10, eos_id=eos, length_penalty=length_penalty, n_best=4, pad_id=0
    )
    assert (got.scores[:, :-1] >= got.scores[:, 1:]).all()  # best first
    if length_penalty <= 1.0:
        assert (
            got.lengths < 10
        ).any()  # some hypotheses really ended at EOS (1.7 favours long ones)
    for b, k in itertools.product(range(2), range(4)):
        length = int(got.lengths[b, k])
        hyp = got.ids[b, k, : 3 + length][None]
        assert length == 10 or hyp[0, -1] == eos
        expected = _log_prob(model, hyp, 3)[0] / length**length_penalty
        torch.testing.assert_close(got.scores[b, k], expected, atol=1e-4, rtol=1e-5)


def test_batched_decoding_equals_one_by_one():
    model = _lm(4)
    ids = torch.tensor([[3, 9, 4, 4], [7, 7, 1, 2], [11, 30, 2, 5]])
    eos = 6
    batch_greedy = greedy(model, ids, 15, eos_id=eos, pad_id=0)
    batch_beam = beam_search(model, ids, 3, 15, eos_id=eos, n_best=2, pad_id=0)
    for i in range(3):
        alone = greedy(model, ids[i : i + 1], 15, eos_id=eos, pad_id=0)
        assert torch.equal(batch_greedy[i, : alone.shape[1]], alone[0])
        assert (batch_greedy[i, alone.shape[1] :] == 0).all()
        one = beam_search(model, ids[i : i + 1], 3, 15, eos_id=eos, n_best=2, pad_id=0)
        assert torch.equal(batch_beam.ids[i, :, : one.ids.shape[-1]], one.ids[0])
        torch.testing.assert_close(batch_beam.scores[i], one.scores[0])


class _Speller(torch.nn.Module):
    """A model whose next token depends only on its prompt and the step: prompt row i spells
    tokens 3, 4, ... for `lengths[i]` steps, then EOS (2), each choice far likelier than the rest,
    so inputs finish at different steps."""

    needs_source = False

    def __init__(self, lengths: list[int], seeds: list[int]):
        super().__init__()
        self.lengths, self.cfg = torch.tensor(lengths), ModelConfig(context=64)
        self.noise = torch.stack(  # (inputs, steps, V): each input's own, whatever the batch
            [torch.randn(64, 12, generator=torch.Generator().manual_seed(s)) for s in seeds]
        )

    def start_state(self, batch, max_len, src=None):
        return _RowsState(torch.arange(batch))

    def step(self, tokens, state):
        t = state.pos - 1 + tokens.shape[1] - 1  # the step of the token to predict, from 0
        logits = self.noise[state.rows, t].clone()  # (B, V)
        n = self.lengths[state.rows]
        want = torch.where(t < n, 3 + t % 9, torch.full_like(n, 2))
        logits[torch.arange(len(n)), want] += 6.0
        state.pos += tokens.shape[1]
        return logits, state


class _RowsState:
    def __init__(self, rows):
        self.rows, self.pos = rows, 1

    def reorder(self, index, same_sources=False):
        self.rows = self.rows[index]
        return self


def _spied(monkeypatch) -> list:
    from tfmr.decode import Beams

    dropped, drop = [], Beams.drop_finished

    def spy(self, share=0.25):
        kept = drop(self, share)
        dropped.append(kept is not None)
        return kept

    monkeypatch.setattr(Beams, "drop_finished", spy)
    return dropped


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("beam", [1, 3])
def test_inputs_that_finish_early_leave_the_batch_and_change_nothing(
    beam, early_stopping, monkeypatch
):
    """Beam search drops the inputs that can no longer improve from the batch (Beams.drop_finished,
    with the decoding state's rows): a batch whose inputs end at different steps gives each
    input's hypotheses, scores and lengths exactly as decoding it alone does."""
    lengths = [1, 7, 2, 9, 3, 3, 12, 5]
    ids = torch.arange(len(lengths))[:, None].repeat(1, 2) + 20
    kw = dict(eos_id=2, n_best=beam, pad_id=0, early_stopping=early_stopping)
    dropped = _spied(monkeypatch)
    batch = beam_search(_Speller(lengths, range(8)), ids, beam, 16, **kw)
    assert any(dropped)  # some inputs did leave the batch early
    for i, n in enumerate(lengths):
        one = beam_search(_Speller([n], [i]), ids[i : i + 1], beam, 16, **kw)
        assert torch.equal(batch.lengths[i], one.lengths[0])
        assert torch.equal(batch.ids[i, :, : one.ids.shape[-1]], one.ids[0])
        assert (batch.ids[i, :, one.ids.shape[-1] :] == 0).all()
        torch.testing.assert_close(batch.scores[i], one.scores[0], atol=1e-5, rtol=1e-5)


def test_a_real_model_s_finished_inputs_leave_the_batch_and_greedy_is_unchanged(monkeypatch):
    """The same with a Transformer's caches reordered to fewer rows: greedy with scores (beam 1)
    on a batch equals each input alone."""
    model = _lm(5)
    torch.manual_seed(5)
    ids = torch.randint(1, 40, (8, 3))
    eos = int(torch.mode(greedy(model, ids, 12)[:, 3:].flatten()).values)  # a frequent token
    dropped = _spied(monkeypatch)
    batch = beam_search(model, ids, 1, 12, eos_id=eos, n_best=1, pad_id=0)
    assert any(dropped)
    for i in range(len(ids)):
        one = beam_search(model, ids[i : i + 1], 1, 12, eos_id=eos, n_best=1, pad_id=0)
        assert torch.equal(batch.ids[i, :, : one.ids.shape[-1]], one.ids[0])
        torch.testing.assert_close(batch.scores[i], one.scores[0], atol=1e-5, rtol=1e-5)


def test_greedy_goes_on_without_the_rows_that_ended(monkeypatch):
    """Greedy decoding drops the rows that ended once they are a quarter of the batch (the state,
    the source and the tokens seen follow the rows left): each row's tokens, the pad after its EOS
    included, are those of decoding it alone, for a speller and for an encoder-decoder whose
    sources are padded."""
    import tfmr.decode as decode

    dropped, many = [], decode._many_ended
    monkeypatch.setattr(decode, "_many_ended", lambda *a: dropped.append(many(*a)) or many(*a))
    lengths = [1, 7, 2, 9, 3, 3, 12, 5]
    ids = torch.arange(len(lengths))[:, None].repeat(1, 2) + 20
    batch = greedy(_Speller(lengths, range(8)), ids, 16, eos_id=2, pad_id=0)
    assert any(dropped)
    for i, n in enumerate(lengths):
        alone = greedy(_Speller([n], [i]), ids[i : i + 1], 16, eos_id=2, pad_id=0)[0]
        assert (
            torch.equal(batch[i, : alone.shape[0]], alone) and not batch[i, alone.shape[0] :].any()
        )
    model = _seq2seq(3)
    torch.manual_seed(3)
    src = torch.randint(3, 30, (6, 7))
    src[1, 3:] = src[4, 2:] = 0  # padded sources
    bos = torch.ones(6, 1, dtype=torch.long)
    eos = int(greedy(model, bos, 10, src=src)[0, -1])  # ends rows 0, 2, 3 and 5 a step early
    dropped.clear()
    batch = greedy(model, bos, 10, eos_id=eos, src=src, pad_id=0)
    assert any(dropped)
    for i in range(6):
        n = int((src[i] != 0).sum())
        alone = greedy(model, bos[:1], 10, eos_id=eos, src=src[i : i + 1, :n], pad_id=0)[0]
        assert (
            torch.equal(batch[i, : alone.shape[0]], alone) and not batch[i, alone.shape[0] :].any()
        )


def test_seq2seq_beam_1_is_greedy_and_batches_with_source_padding_equal_one_by_one():
    model = _seq2seq()
    src = torch.tensor([[5, 6, 7, 8, 9], [12, 13, 0, 0, 0]])  # the second source is padded
    bos = torch.ones(2, 1, dtype=torch.long)
    g = greedy(model, bos, 10, src=src)
    assert torch.equal(beam_search(model, bos, 1, 10, src=src), g)
    beams = beam_search(model, bos, 4, 10, src=src, n_best=2)
    for i, length in enumerate([5, 2]):
        alone = src[i : i + 1, :length]
        assert torch.equal(g[i], greedy(model, bos[:1], 10, src=alone)[0])
        one = beam_search(model, bos[:1], 4, 10, src=alone, n_best=2)
        assert torch.equal(beams.ids[i], one.ids[0])
        torch.testing.assert_close(beams.scores[i], one.scores[0], atol=1e-5, rtol=1e-5)


def test_repetition_processors_change_greedy_the_way_they_should():
    model = _lm(5, vocab=12)
    ids = torch.tensor([[1, 2, 3]])
    plain = greedy(model, ids, 30)
    no_repeat = greedy(model, ids, 30, ngram=2)
    bigrams = list(zip(no_repeat[0].tolist(), no_repeat[0, 1:].tolist()))
    assert len(bigrams) == len(set(bigrams))  # no bigram twice, prompt included
    assert len(set(zip(plain[0].tolist(), plain[0, 1:].tolist()))) < len(
        bigrams
    )  # and greedy alone repeats
    penalised = greedy(model, ids, 30, repetition=100.0)
    assert len(set(penalised[0, 3:].tolist())) > len(set(plain[0, 3:].tolist()))


def test_sampling_with_a_seed_reproduces_and_respects_top_k():
    model = _lm(6)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    a = sample(model, ids, 20, temperature=1.0, top_k=3, seed=11)
    assert torch.equal(a, sample(model, ids, 20, temperature=1.0, top_k=3, seed=11))
    with torch.no_grad():  # every sampled token is among the 3 most likely at its step
        logits = model(a).logits[:, 2:-1]
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == a[:, 3:, None]).any(-1).all()


def test_bad_beam_arguments_are_refused_clearly():
    model = _lm()
    ids = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="n_best must be between 1 and beam_size"):
        beam_search(model, ids, 2, 5, n_best=3)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        beam_search(model, ids, 2, 100)
    with pytest.raises(ValueError, match="early_stopping must be"):
        beam_search(model, ids, 2, 5, early_stopping="sometimes")


def test_on_step_records_every_candidate_and_changes_nothing():
    """The hook `tfmr explore` draws its tree from: the search returns the same n-best with it;
    each step offers 2K candidates whose scores are the model's summed log-probs of the path the
    parents say; the n best are among the candidates that entered the pool, with the log-prob sum
    their normalised score came from; the running beams are the kept, unended candidates."""
    from tfmr.decode import NEG, BeamStep

    model = _lm(3)
    ids = torch.tensor([[2, 5, 9]])
    eos, K = 7, 3
    plain = beam_search(model, ids, K, 6, eos_id=eos, n_best=K)
    steps: list[BeamStep] = []
    hooked = beam_search(model, ids, K, 6, eos_id=eos, n_best=K, on_step=steps.append)
    assert torch.equal(plain.ids, hooked.ids) and torch.equal(plain.scores, hooked.scores)
    paths = {0: ()}  # beam slot -> its tokens so far
    pooled = {}
    for s in steps:
        assert s.parents.shape == s.tokens.shape == s.scores.shape == (
            1,
            2 * K,
        ) and s.kept.shape == (1, K)
        new_paths = {}
        for c in range(2 * K):
            if float(s.scores[0, c]) <= NEG / 2:
                continue
            path = paths[int(s.parents[0, c])] + (int(s.tokens[0, c]),)
            full = torch.tensor([ids[0].tolist() + list(path)])
            torch.testing.assert_close(
                float(s.scores[0, c]), float(_log_prob(model, full, 3)[0]), atol=1e-4, rtol=1e-4
            )
            if bool(s.pooled[0, c]):
                assert bool(s.ended[0, c])
                pooled[path] = float(s.scores[0, c])
            new_paths[c] = path
        paths = {
            slot: new_paths[int(c)]
            for slot, c in enumerate(s.kept[0].tolist())
            if int(c) in new_paths and not bool(s.ended[0, int(c)])
        }
    for k in range(K):
        length = int(hooked.lengths[0, k])
        path = tuple(hooked.ids[0, k, 3 : 3 + length].tolist())
        assert path in pooled
        torch.testing.assert_close(
            float(hooked.scores[0, k]), pooled[path] / length, atol=1e-5, rtol=1e-5
        )
