"""Alignment kernels (location-aware, monotonic attention) as stateful cross-attention kernels:
the identities and recursions they must satisfy, padding, step-by-step decoding equal to the full
forward, beam search reordering their state, training, checkpoints and config validation."""

from __future__ import annotations

import pytest
import torch
from conftest import reversal_batch

from tfmr import Choice, ConfigError, ModelConfig, RunConfig, build_model, checkpoint, decode
from tfmr.alignment import (
    ALIGNMENT_KERNELS,
    CROSS_KERNELS,
    AlignmentState,
    LocationAware,
    MoChA,
    Monotonic,
    chunk_readout,
    expected_alignment,
    first_position,
    hard_alignment,
)
from tfmr.builder import build_copy_model
from tfmr.cache import DecodeState
from tfmr.config import from_dict, to_dict
from tfmr.kernels import Eager
from tfmr.masks import Mask

V = 12  # tiny vocabulary: 0 pad, 1 bos, 2 eos, 3.. symbols
PAD, BOS, EOS = 0, 1, 2


def _cfg(kind: str, **options) -> ModelConfig:
    return ModelConfig(
        arch="encoder-decoder",
        vocab_size=V,
        dim=32,
        layers=2,
        heads=4,
        context=16,
        pad_id=PAD,
        kernel=Choice("eager"),
        cross_kernel=Choice(kind, **options),
    )


def _qkv(B=2, H=3, Tq=5, S=7, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, D, generator=g) for n in (Tq, S, S)]


def _padded_mask(B=2, S=7, real=(7, 4)):
    pad = torch.arange(S)[None, :] < torch.tensor(real)[:, None]  # (B, S) True for real tokens
    return Mask(causal=False, key_padding=pad), pad


def _src(B=3, S=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (B, S), generator=g)
    src[1, 4:] = PAD  # a padded row
    return src


# ----------------------------------------------------------------------------- location-aware
def test_location_with_a_zero_convolution_is_content_only_attention():
    q, k, v = _qkv()
    mask, _ = _padded_mask()
    kernel = LocationAware(heads=3, channels=4, kernel_size=5)
    with torch.no_grad():
        kernel.conv.weight.zero_()
    out, weights = kernel(q, k, v, mask)
    ref_out, ref_weights = Eager()(q, k, v, mask)
    assert torch.equal(weights, ref_weights)
    assert torch.equal(out, ref_out)


def test_location_features_change_the_scores_and_respect_padding():
    q, k, v = _qkv()
    mask, pad = _padded_mask()
    _, weights = LocationAware(heads=3)(q, k, v, mask)
    _, ref = Eager()(q, k, v, mask)
    assert not torch.allclose(weights, ref)
    assert torch.all(weights[1, :, :, 4:] == 0)  # padded keys get no weight
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))


def test_location_step_by_step_with_state_equals_all_steps_at_once():
    q, k, v = _qkv()
    mask, _ = _padded_mask()
    kernel = LocationAware(heads=3)
    out, weights = kernel(q, k, v, mask)
    state = kernel.start_state(2, 7, q.device)
    for i in range(q.shape[2]):
        o, w = kernel(q[:, :, i : i + 1], k, v, mask, None, state)
        torch.testing.assert_close(o, out[:, :, i : i + 1], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(state.prev, weights[:, :, i], atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- monotonic
def _recursive_alignment(p: torch.Tensor) -> torch.Tensor:
    """The definition, by plain loops: q_ij = (1 - p_i,j-1) q_i,j-1 + alpha_i-1,j; alpha_ij = p_ij q_ij,
    alpha_0 = one-hot at j = 0. p: (T, S) -> alpha (T, S)."""
    T, S = p.shape
    prev = [1.0] + [0.0] * (S - 1)
    rows = []
    for i in range(T):
        alpha, qq = [], 0.0
        for j in range(S):
            qq = (1 - float(p[i, j - 1])) * qq + prev[j] if j > 0 else prev[0]
            alpha.append(float(p[i, j]) * qq)
        rows.append(alpha)
        prev = alpha
    return torch.tensor(rows)


def test_expected_alignment_equals_the_recursive_definition():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        p = torch.rand(6, 9, generator=g)
        prev, rows = first_position(1, 1, 9, "cpu")[0, 0], []
        for i in range(6):
            prev = expected_alignment(prev, p[i])
            rows.append(prev)
        torch.testing.assert_close(torch.stack(rows), _recursive_alignment(p), atol=1e-4, rtol=0)


def test_p_one_everywhere_keeps_the_alignment_in_place():
    p = torch.ones(4, 6)
    soft, hard = first_position(1, 1, 6, "cpu")[0, 0], first_position(1, 1, 6, "cpu")[0, 0]
    for i in range(4):  # each step stops at once where the previous one attended: position 0
        soft, hard = expected_alignment(soft, p[i]), hard_alignment(hard, p[i])
        torch.testing.assert_close(soft, torch.eye(6)[0], atol=1e-6, rtol=0)
        assert torch.equal(hard, torch.eye(6)[0])
    prev = torch.eye(6)[3]  # wherever the previous step was, it stays there
    torch.testing.assert_close(expected_alignment(prev, torch.ones(6)), prev, atol=1e-6, rtol=0)


def test_p_zero_everywhere_attends_nowhere():
    prev = first_position(1, 1, 6, "cpu")[0, 0]
    assert torch.equal(expected_alignment(prev, torch.zeros(6)), torch.zeros(6))
    assert torch.equal(hard_alignment(prev, torch.zeros(6)), torch.zeros(6))


def test_monotonic_rows_sum_to_at_most_one_and_padding_gets_nothing():
    q, k, v = _qkv(Tq=8)
    mask, _ = _padded_mask()
    kernel = Monotonic(heads=3, r_init=0.0, noise=1.0).train()
    out, weights = kernel(q, k, v, mask)
    sums = weights.sum(-1)
    assert torch.all(sums <= 1 + 1e-5) and torch.all(weights >= 0)
    assert sums.min() < 0.999  # some mass runs off the end: the bound is not trivial
    assert torch.all(weights[1, :, :, 4:] == 0)
    torch.testing.assert_close(out, weights @ v)


def test_hard_monotonic_attends_to_non_decreasing_positions():
    q, k, v = _qkv(B=4, Tq=10, S=12, seed=1)
    kernel = Monotonic(heads=3, r_init=0.5).eval()
    _, weights = kernel(q, k, v, Mask())
    assert set(weights.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(weights.sum(-1) <= 1)
    attended = weights.sum(-1) > 0  # (B, H, T)
    pos = torch.where(attended, weights.argmax(-1), torch.full_like(attended, 12, dtype=torch.long))
    assert torch.all(pos[..., 1:] >= pos[..., :-1])  # once off the end (12), it stays off
    assert attended.any() and (pos[..., -1] > pos[..., 0]).any()  # it moves and it attends


def test_hard_monotonic_stops_at_the_first_position_with_p_at_least_half():
    prev = torch.eye(8)[2]
    p = torch.tensor([0.9, 0.9, 0.1, 0.4, 0.7, 0.2, 0.8, 0.1])
    assert torch.equal(hard_alignment(prev, p), torch.eye(8)[4])  # 0, 1 lie behind; 2, 3 below 0.5


def test_monotonic_step_by_step_equals_all_steps_at_once_soft_and_hard():
    q, k, v = _qkv(Tq=6)
    mask, _ = _padded_mask()
    for hard in (True, False):
        kernel = Monotonic(heads=3, r_init=0.3, hard=hard).eval()
        out, weights = kernel(q, k, v, mask)
        state = kernel.start_state(2, 7, q.device)
        for i in range(6):
            o, _ = kernel(q[:, :, i : i + 1], k, v, mask, None, state)
            torch.testing.assert_close(o, out[:, :, i : i + 1], atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- MoChA
def test_chunk_readout_equals_its_definition_by_loops():
    g = torch.Generator().manual_seed(0)
    S, w = 9, 3
    alpha, u = torch.rand(S, generator=g) / S, torch.randn(S, generator=g)
    beta = chunk_readout(alpha, u, w)
    ref = [
        sum(
            float(alpha[j])
            * float(torch.exp(u[k]))
            / sum(float(torch.exp(u[m])) for m in range(max(0, j - w + 1), j + 1))
            for j in range(k, min(S, k + w))
        )
        for k in range(S)
    ]
    torch.testing.assert_close(beta, torch.tensor(ref), atol=1e-6, rtol=1e-5)
    hard = chunk_readout(torch.eye(S)[5], u, w)  # stopped at 5: a softmax over positions 3..5
    torch.testing.assert_close(
        hard, torch.cat((torch.zeros(3), torch.softmax(u[3:6], 0), torch.zeros(3)))
    )


def test_mocha_with_chunk_one_is_monotonic_attention_and_respects_padding():
    q, k, v = _qkv(Tq=6)
    mask, _ = _padded_mask()
    for hard in (True, False):
        mono, mocha = (
            Monotonic(heads=3, r_init=0.3, hard=hard).eval(),
            MoChA(heads=3, r_init=0.3, hard=hard, chunk=1).eval(),
        )
        torch.testing.assert_close(mocha(q, k, v, mask), mono(q, k, v, mask))
    _, weights = MoChA(heads=3, r_init=0.3, chunk=3).train()(q, k, v, mask)
    assert torch.all(weights[1, :, :, 4:] == 0) and torch.all(weights.sum(-1) <= 1 + 1e-5)


def test_alignment_state_reorders_with_the_decode_state():
    state = DecodeState([], memory=torch.zeros(3, 5, 2))
    state.align = [AlignmentState(torch.arange(3.0)[:, None, None].expand(3, 2, 5).clone()), None]
    state.reorder(torch.tensor([2, 2, 0]))
    assert state.align[0].prev[:, 0, 0].tolist() == [2.0, 2.0, 0.0]


# ----------------------------------------------------------------------------- in a model
def _model(kind: str, seed=0, **options):
    torch.manual_seed(seed)
    model = build_model(_cfg(kind, **options)).eval()
    if kind in ("monotonic", "mocha"):  # let the untrained hard alignment attend somewhere
        for block in model.blocks:
            block.cross.kernel.r.data.fill_(0.2)
    return model


@pytest.mark.parametrize("kind", sorted(ALIGNMENT_KERNELS))
def test_model_cached_decoding_equals_the_full_forward(kind):
    model = _model(kind)
    src = _src()
    tgt = torch.randint(3, V, (3, 8), generator=torch.Generator().manual_seed(1))
    tgt[:, 0] = BOS
    with torch.no_grad():
        full = model(src, tgt)
        state = model.start_state(3, 16, src=src)
        logits, state = model.step(tgt[:, :3], state)  # a prompt of 3, then one token at a time
        torch.testing.assert_close(logits, full.logits[:, 2], atol=1e-5, rtol=1e-5)
        for t in range(3, 8):
            logits, state = model.step(tgt[:, t : t + 1], state)
            torch.testing.assert_close(logits, full.logits[:, t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(
                state.last.cross_attentions[-1][:, :, -1], full.cross_attentions[-1][:, :, t]
            )
    assert torch.all(full.cross_attentions[0][1, :, :, 4:] == 0)  # source padding gets no weight
    if kind in ("monotonic", "mocha"):
        assert full.cross_attentions[0].sum() > 0  # the hard alignment attends somewhere


@pytest.mark.parametrize("kind", sorted(ALIGNMENT_KERNELS))
def test_beam_search_reorders_the_alignment_state(kind):
    """Each n-best hypothesis's beam score equals its log-probability under the full forward: it
    would not if the alignments were not reordered with the surviving beams."""
    model = _model(kind)
    src = _src()
    start = torch.full((3, 1), BOS)
    nb = decode.beam_search(
        model, start, beam_size=4, max_new_tokens=6, src=src, n_best=4, length_penalty=0.0
    )
    with torch.no_grad():
        for b in range(3):
            ids = nb.ids[b]  # (n, 1 + 6)
            out = model(src[b : b + 1].expand(4, -1), ids[:, :-1])
            logp = (
                torch.log_softmax(out.logits.float(), -1)
                .gather(-1, ids[:, 1:, None])
                .squeeze(-1)
                .sum(-1)
            )
            torch.testing.assert_close(nb.scores[b], logp, atol=1e-4, rtol=1e-4)
    greedy = decode.greedy(model, start, 6, src=src)
    assert torch.equal(decode.beam_search(model, start, 1, 6, src=src), greedy)  # beam 1 is greedy


def _reversal_batch(g, B=32):
    return reversal_batch(g, B, V)  # conftest: pad 0, bos 1, eos 2, as PAD, BOS, EOS here


@pytest.mark.parametrize("kind", sorted(ALIGNMENT_KERNELS))
def test_trains_decodes_and_round_trips_a_checkpoint(kind, tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(kind, **({"noise": 0.5} if kind in ("monotonic", "mocha") else {}))
    cfg.layers = cfg.encoder_layers = 1
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    fixed = _reversal_batch(torch.Generator().manual_seed(99))
    with torch.no_grad():
        before = model.train()(*fixed).loss.item()
    for _ in range(30):  # about a second
        loss = model.train()(*_reversal_batch(g, B=16)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = model.train()(*fixed).loss.item()
    assert after < before - 0.3, (before, after)  # 2.5 -> 1.7 (location), 2.1 (monotonic)

    model.eval()
    checkpoint.save(tmp_path / "ckpt", model, to_dict(RunConfig(model=cfg)))
    saved = from_dict(RunConfig, checkpoint.read_config(tmp_path / "ckpt"))
    assert saved.model.cross_kernel == cfg.cross_kernel
    loaded = build_model(saved.model).eval()
    checkpoint.load_weights(tmp_path / "ckpt", loaded)
    src, tgt_in, _ = fixed
    with torch.no_grad():
        assert torch.equal(loaded(src, tgt_in).logits, model(src, tgt_in).logits)

    start = torch.full((4, 1), BOS)
    out = decode.greedy(model, start, 6, eos_id=EOS, src=src[:4])
    assert out.shape[0] == 4 and torch.equal(
        out, decode.greedy(loaded, start, 6, eos_id=EOS, src=src[:4])
    )
    beam = decode.beam_search(model, start, 3, 6, eos_id=EOS, src=src[:4])
    assert beam.shape[0] == 4 and torch.all(beam[:, 0] == BOS)


@pytest.mark.parametrize("kind", sorted(ALIGNMENT_KERNELS))
def test_pointer_generator_reads_the_alignment_step_by_step(kind):
    torch.manual_seed(0)
    model = build_copy_model(_cfg(kind), unk_id=3).eval()
    src = _src()
    src[0, 2] = V + 1  # a source-only token (extended vocabulary)
    tgt = torch.randint(3, V, (3, 6), generator=torch.Generator().manual_seed(2))
    tgt[:, 0] = BOS
    with torch.no_grad():
        full = model(src, tgt).logits  # (B, T, V + n_ext) log-probabilities
        state = model.start_state(3, 16, src=src)
        for t in range(6):
            logp, state = model.step(tgt[:, t : t + 1], state)
            torch.testing.assert_close(logp, full[:, t], atol=1e-5, rtol=1e-5)
    assert decode.greedy(model, tgt[:, :1], 5, src=src).shape == (3, 6)


def test_runs_under_bf16_autocast_with_gradients():
    for kind in sorted(ALIGNMENT_KERNELS):
        model = _model(kind).train()
        src, tgt_in, targets = _reversal_batch(torch.Generator().manual_seed(0), B=4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(src, tgt_in, targets).loss
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("kind", sorted(ALIGNMENT_KERNELS))
def test_alignment_kernels_are_refused_for_self_attention(kind):
    with pytest.raises(ConfigError, match=f"model.cross_kernel={kind}"):
        build_model(ModelConfig(arch="encoder-decoder", kernel=Choice(kind)))
    with pytest.raises(ConfigError, match="model.cross_kernel needs model.arch=encoder-decoder"):
        build_model(ModelConfig(arch="decoder", cross_kernel=Choice(kind)))


def test_cross_kernel_options_are_checked_and_declared():
    with pytest.raises(ConfigError, match="valid options: channels, kernel_size"):
        build_model(_cfg("location", channel=4))
    with pytest.raises(ConfigError, match="kernel_size odd"):
        build_model(_cfg("location", kernel_size=4))
    for kind, cls in ALIGNMENT_KERNELS.items():
        assert cls.gives_weights and cls.stateful and CROSS_KERNELS[kind] is cls
    model = build_model(_cfg("location", channels=2))
    assert (
        isinstance(model.blocks[0].cross.kernel, LocationAware)
        and model.blocks[0].cross.kernel.channels == 2
    )
    assert isinstance(model.blocks[0].attn.kernel, Eager)  # self-attention keeps model.kernel
    plain = build_model(
        ModelConfig(arch="encoder-decoder", cross_kernel=Choice("eager"), kernel=Choice("sdpa"))
    )
    assert isinstance(plain.blocks[0].cross.kernel, Eager) and not isinstance(
        plain.blocks[0].attn.kernel, Eager
    )
