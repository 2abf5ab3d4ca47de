"""tfmr.ensemble.Ensemble: several models decoding as one. Its step equals the mean of the
members' probabilities computed by hand from their full forwards; greedy and beam search decode it
through the ordinary decoders (beam scores equal the ensemble's log-probability of each
hypothesis, which needs every member's state reordered); one member is that member."""

from __future__ import annotations

import pytest
import torch

from tfmr import ModelConfig, build_model, decode
from tfmr.ensemble import Ensemble

V, BOS = 20, 1


def _model(seed, arch="encoder-decoder", dim=32):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        arch=arch, vocab_size=V, dim=dim, layers=2, heads=4, context=24, tie_embeddings=False
    )
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)  # peaky and different members: decisions that matter
    return model


def _src(B=3, S=6):
    return torch.randint(3, V, (B, S), generator=torch.Generator().manual_seed(5))


def _logp(model, src, ids):
    """Next-token log-probs after every prefix of `ids` (B, T) -> (B, T, V), full forward."""
    out = model(src, ids) if src is not None else model(ids)
    return out.logits.float().log_softmax(-1)


@pytest.mark.parametrize("combine", ["prob", "logprob"])
def test_each_step_combines_the_members_as_defined(combine):
    a, b = _model(0), _model(1, dim=48)
    ens = Ensemble([a, b], weights=[3, 1], combine=combine)
    src, ids = _src(), torch.randint(3, V, (3, 5), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        la, lb = _logp(a, src, ids), _logp(b, src, ids)  # (B, T, V)
        want = (
            torch.log(0.75 * la.exp() + 0.25 * lb.exp())
            if combine == "prob"
            else (0.75 * la + 0.25 * lb).log_softmax(-1)
        )
        state = ens.start_state(3, 8, src)
        for t in range(5):
            got, state = ens.step(ids[:, t : t + 1], state)
            torch.testing.assert_close(got, want[:, t], atol=1e-5, rtol=1e-5)
    assert torch.allclose(got.exp().sum(-1), torch.ones(3))  # normalised


def test_a_full_forward_is_the_combined_log_probability_of_every_prefix():
    a, b = _model(0), _model(1, dim=48)
    ens = Ensemble([a, b], weights=[1, 3])
    src, ids = _src(), torch.randint(3, V, (3, 5), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        la, lb = _logp(a, src, ids), _logp(b, src, ids)  # (B, T, V)
        out = ens(src, ids)
        torch.testing.assert_close(
            out.logits, torch.log(0.25 * la.exp() + 0.75 * lb.exp()), atol=1e-5, rtol=1e-5
        )
        assert out.loss is None and len(out.cross_attentions) == len(a(src, ids).cross_attentions)
        with pytest.raises(ValueError, match="not trained"):
            ens(src, ids, ids)


def test_one_member_decodes_as_that_member():
    a, src = _model(0), _src()
    start = torch.full((3, 1), BOS)
    one = Ensemble([a])
    assert torch.equal(decode.greedy(one, start, 7, src=src), decode.greedy(a, start, 7, src=src))
    assert torch.equal(
        decode.beam_search(one, start, 3, 7, src=src), decode.beam_search(a, start, 3, 7, src=src)
    )


def test_beam_scores_are_the_ensembles_log_probability():
    a, b = _model(0), _model(2)
    ens, src, start = Ensemble([a, b]), _src(), torch.full((3, 1), BOS)
    nb = decode.beam_search(ens, start, 4, 6, src=src, n_best=4, length_penalty=0.0)
    with torch.no_grad():
        for row in range(3):
            ids = nb.ids[row]  # (4, 1 + 6)
            s = src[row : row + 1].expand(4, -1)
            la, lb = _logp(a, s, ids[:, :-1]), _logp(b, s, ids[:, :-1])
            step = torch.log(0.5 * la.exp() + 0.5 * lb.exp())  # (4, 6, V)
            want = step.gather(-1, ids[:, 1:, None]).squeeze(-1).sum(-1)
            torch.testing.assert_close(nb.scores[row], want, atol=1e-4, rtol=1e-4)
    # the members disagree somewhere, so the ensemble is not simply one of them
    ga, gb = (decode.greedy(m, start, 6, src=src) for m in (a, b))
    assert not torch.equal(ga, gb)


def test_decoder_only_members():
    a, b = _model(0, arch="decoder"), _model(1, arch="decoder")
    prompt = torch.randint(3, V, (2, 4), generator=torch.Generator().manual_seed(7))
    ens = Ensemble([a, b])
    out = decode.greedy(ens, prompt, 5)
    with torch.no_grad():
        la, lb = _logp(a, None, out[:, :-1]), _logp(b, None, out[:, :-1])
        mixed = torch.log(0.5 * la.exp() + 0.5 * lb.exp())  # (2, 8, V)
    assert torch.equal(mixed[:, 3:].argmax(-1), out[:, 4:])  # every new token is the arg-max


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="at least one model"):
        Ensemble([])
    with pytest.raises(ValueError, match="one positive weight per model"):
        Ensemble([_model(0)], weights=[1, 2])
    with pytest.raises(ValueError, match="combine must be one of prob, logprob"):
        Ensemble([_model(0)], combine="max")
    with pytest.raises(ValueError, match="mixes encoder-decoder and decoder-only"):
        Ensemble([_model(0), _model(1, arch="decoder")])
    torch.manual_seed(0)
    other = build_model(ModelConfig(arch="encoder-decoder", vocab_size=V + 3, dim=32, layers=1))
    ens, src = Ensemble([_model(0), other.eval()]), _src()
    with pytest.raises(ValueError, match="different vocabularies"):
        ens.step(torch.full((3, 1), BOS), ens.start_state(3, 4, src))
