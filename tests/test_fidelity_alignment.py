"""Location-aware and monotonic attention (alignment.py) against transcriptions of reference code.

Location-aware: ESPnet's `AttLoc` (espnet/nets/pytorch_backend/rnn/attentions.py), transcribed
below in this file's own words from Chorowski et al. 2015 (eq. 8-9) and that code: alpha_0 uniform
over the real source positions, a bias-free convolution of the previous weights, a linear map of
its channels to the attention dimension, e = gvec(tanh(mlp_att(f) + mlp_enc(h) + mlp_dec(s))),
padding at -inf, softmax(scaling * e) with scaling = 2.0, context = sum of the encoder states
weighted. tfmr's `location` with score=additive, start=uniform, scaling=2 gets the same weights
(per head: q = mlp_dec(s), k = mlp_enc(h) less its bias, b = that bias, v = h); weights, contexts
and input gradients must agree at 1e-5, all steps at once and step by step. Tacotron 2's start
(zeros) and tfmr's (position 0) are the same reference fed that previous alignment.

Monotonic: TensorFlow's `BahdanauMonotonicAttention(normalize=True)` with `monotonic_attention`
(tf.contrib.seq2seq, by the paper's first author), transcribed from Raffel et al. 2017 (section
2.3 and eq. 9) and that code: energy g v^T / ||v|| tanh(W s + V h + b) + r, padding at -inf,
N(0, 1) noise times sigmoid_noise added before the sigmoid, the recursive expected alignment in
training, the hard one (energy > 0, first stop at or after the last) at decoding, alpha_0 one-hot
at position 0. Both sides draw the noise from torch's generator, seeded alike, one (B, H, S) draw
per target step.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tfmr import Choice, ModelConfig, build_model
from tfmr.alignment import AdditiveEnergy, LocationAware, MoChA, Monotonic
from tfmr.masks import Mask

B, H, S, TQ = 3, 2, 7, 5
LENGTHS = (7, 5, 3)  # real source positions per row; the rest is padding
E_DIM, DEC_DIM, ATT_DIM, CHANS, FILTS = 6, 5, 4, 3, 2  # FILTS each side: kernel 2 * FILTS + 1


def _padding():
    real = torch.arange(S)[None, :] < torch.tensor(LENGTHS)[:, None]  # (B, S) True for real
    return real, Mask(causal=False, key_padding=real)


# ----------------------------------------------------------------------------- ESPnet's AttLoc, transcribed
class ReferenceAttLoc(nn.Module):
    """One head of location-aware attention the way ESPnet's AttLoc computes it, for a batch of
    encoder states (B, S, E), their lengths, one decoder state (B, Ddec) and the previous weights
    (B, S) or None (then uniform over the real positions)."""

    def __init__(self):
        super().__init__()
        self.mlp_enc = nn.Linear(E_DIM, ATT_DIM)  # with bias: the paper's b
        self.mlp_dec = nn.Linear(DEC_DIM, ATT_DIM, bias=False)
        self.mlp_att = nn.Linear(CHANS, ATT_DIM, bias=False)
        self.loc_conv = nn.Conv2d(1, CHANS, (1, 2 * FILTS + 1), padding=(0, FILTS), bias=False)
        self.gvec = nn.Linear(ATT_DIM, 1)

    def forward(self, enc, lengths, dec_z, att_prev, scaling=2.0):
        batch, frames = enc.shape[:2]
        pad = torch.arange(frames)[None, :] >= torch.tensor(lengths)[:, None]  # (B, S) padding
        if att_prev is None:  # uniform over each row's real positions, 0 on padding
            att_prev = (~pad).float() / torch.tensor(lengths, dtype=torch.float32)[:, None]
        conv = self.loc_conv(att_prev.view(batch, 1, 1, frames))  # (B, C, 1, S)
        conv = self.mlp_att(conv.squeeze(2).transpose(1, 2))  # (B, S, att)
        dec = self.mlp_dec(dec_z).view(batch, 1, ATT_DIM)  # (B, 1, att)
        e = self.gvec(torch.tanh(conv + self.mlp_enc(enc) + dec)).squeeze(2)  # (B, S)
        e = e.masked_fill(pad, float("-inf"))
        w = F.softmax(scaling * e, dim=1)
        return torch.sum(enc * w.view(batch, frames, 1), dim=1), w  # (B, E), (B, S)


def _espnet_run(refs, enc, dec, first):
    """Every head's reference over the TQ decoder states, from `first` (None: its own uniform
    start): contexts (B, H, TQ, E) and weights (B, H, TQ, S)."""
    outs, weights = [], []
    for ref in refs:
        prev, cs, ws = first, [], []
        for i in range(TQ):
            c, prev = ref(enc, LENGTHS, dec[:, i], prev)
            cs.append(c)
            ws.append(prev)
        outs.append(torch.stack(cs, 1))
        weights.append(torch.stack(ws, 1))
    return torch.stack(outs, 1), torch.stack(weights, 1)


def _tfmr_location(refs, start="uniform", scaling=2.0) -> LocationAware:
    """tfmr's kernel holding each head's reference weights."""
    kernel = LocationAware(
        heads=H,
        channels=CHANS,
        kernel_size=2 * FILTS + 1,
        start=start,
        score="additive",
        scaling=scaling,
        head_dim=ATT_DIM,
    ).eval()
    with torch.no_grad():
        for h, ref in enumerate(refs):
            kernel.conv.weight[h * CHANS : (h + 1) * CHANS] = ref.loc_conv.weight[:, :, 0]
            kernel.score.U[h] = ref.mlp_att.weight  # (att, C)
            kernel.score.g[h] = ref.gvec.weight[0]  # gvec's bias shifts every score alike
            kernel.score.b[h] = ref.mlp_enc.bias
    return kernel


def _location_inputs(refs, enc, dec):
    """q, k, v of every head from the references' own projections: (B, H, TQ or S, .)."""
    q = torch.stack([ref.mlp_dec(dec) for ref in refs], 1)  # (B, H, TQ, att)
    k = torch.stack([enc @ ref.mlp_enc.weight.T for ref in refs], 1)  # (B, H, S, att), no bias
    v = enc[:, None].expand(B, H, S, E_DIM)  # (B, H, S, E): ESPnet weighs the encoder states
    return q, k, v


def _location_case(seed=0):
    torch.manual_seed(seed)
    refs = [ReferenceAttLoc() for _ in range(H)]
    enc = torch.randn(B, S, E_DIM, requires_grad=True)
    dec = torch.randn(B, TQ, DEC_DIM, requires_grad=True)
    return refs, enc, dec


def test_location_additive_uniform_equals_espnet_attloc_with_gradients():
    refs, enc, dec = _location_case()
    real, mask = _padding()
    ref_out, ref_w = _espnet_run(refs, enc, dec, None)
    kernel = _tfmr_location(refs)
    out, w = kernel(*_location_inputs(refs, enc, dec), mask)
    torch.testing.assert_close(w, ref_w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    assert torch.all(w[~real[:, None, None, :].expand_as(w)] == 0)  # padding gets nothing

    probe = torch.randn(B, H, TQ, E_DIM, generator=torch.Generator().manual_seed(1))
    ref_grads = torch.autograd.grad((ref_out * probe).sum(), (enc, dec))
    grads = torch.autograd.grad((out * probe).sum(), (enc, dec))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_location_step_by_step_equals_espnet_attloc():
    refs, enc, dec = _location_case(seed=2)
    _, mask = _padding()
    with torch.no_grad():
        ref_out, ref_w = _espnet_run(refs, enc, dec, None)
        kernel = _tfmr_location(refs)
        q, k, v = _location_inputs(refs, enc, dec)
        state = kernel.start_state(B, S, q.device)
        for i in range(TQ):
            out, w = kernel(q[:, :, i : i + 1], k, v, mask, None, state)
            torch.testing.assert_close(w[:, :, 0], ref_w[:, :, i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out[:, :, 0], ref_out[:, :, i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("start", ["zeros", "first"])
def test_location_starts_equal_the_reference_fed_that_alignment(start):
    """start=zeros is Tacotron 2's (no previous weights), start=first all mass on position 0."""
    refs, enc, dec = _location_case(seed=3)
    _, mask = _padding()
    first = torch.zeros(B, S)
    if start == "first":
        first[:, 0] = 1.0
    with torch.no_grad():
        ref_out, ref_w = _espnet_run(refs, enc, dec, first)
        uniform_w = _espnet_run(refs, enc, dec, None)[1]
        out, w = _tfmr_location(refs, start=start)(*_location_inputs(refs, enc, dec), mask)
    torch.testing.assert_close(w, ref_w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    assert (w[:, :, 0] - uniform_w[:, :, 0]).abs().max() > 1e-3  # the start matters


def test_location_without_espnet_scaling_differs():
    refs, enc, dec = _location_case()
    _, mask = _padding()
    with torch.no_grad():
        ref_w = _espnet_run(refs, enc, dec, None)[1]
        _, w = _tfmr_location(refs, scaling=1.0)(*_location_inputs(refs, enc, dec), mask)
    assert (w - ref_w).abs().max() > 1e-3


def test_location_options_are_checked_and_old_checkpoints_load():
    with pytest.raises(ValueError, match="start must be one of first, uniform, zeros"):
        LocationAware(heads=2, start="middle")
    with pytest.raises(ValueError, match="score must be one of dot, additive"):
        LocationAware(heads=2, score="bilinear", head_dim=4)
    kernel = LocationAware(heads=2, channels=3)
    old = {"conv.weight": torch.randn(6, 1, 7), "w": torch.randn(2, 3)}  # before `score`
    kernel.load_state_dict(dict(old))
    assert torch.equal(kernel.score.w, old["w"])


def test_location_options_reach_the_built_kernel():
    cfg = ModelConfig(
        arch="encoder-decoder",
        vocab_size=12,
        dim=32,
        heads=4,
        layers=1,
        context=16,
        cross_kernel=Choice("location", score="additive", start="uniform", scaling=2.0),
    )
    kernel = build_model(cfg).blocks[0].cross.kernel
    assert kernel.score.U.shape == (cfg.heads, cfg.dim // cfg.heads, kernel.channels)  # head_dim
    assert "start=uniform, score=additive, scaling=2.0" in repr(kernel)


# ----------------------------------------------------------------------------- TF monotonic attention, transcribed
def reference_energy(q, k, v, g, b, r, real):
    """BahdanauMonotonicAttention's score for one target step, every head: (B, H, D) queries,
    (B, H, S, D) keys, per head v (H, D), g (H,), b (H, D), r (H,) -> (B, H, S), padding -inf."""
    normed_v = g[:, None] * v * torch.rsqrt((v * v).sum(-1, keepdim=True))  # (H, D)
    hidden = torch.tanh(k + q[:, :, None, :] + b[None, :, None, :])  # (B, H, S, D)
    score = (normed_v[None, :, None, :] * hidden).sum(-1) + r[None, :, None]
    return score.masked_fill(~real[:, None, :], float("-inf"))


def reference_recursive(p, prev):
    """monotonic_attention(mode='recursive'): q_j = (1 - p_{j-1}) q_{j-1} + prev_j, alpha = p q."""
    q, out = torch.zeros_like(p[..., 0]), []
    for j in range(p.shape[-1]):
        q = (1 - p[..., j - 1]) * q + prev[..., j] if j > 0 else prev[..., 0]
        out.append(p[..., j] * q)
    return torch.stack(out, -1)


def reference_hard(p, prev):
    """monotonic_attention(mode='hard'): p times cumsum(prev), times cumprod_exclusive(1 - p)."""
    p = p * torch.cumsum(prev, -1)
    keep = torch.cumprod(torch.cat([torch.ones_like(p[..., :1]), 1 - p[..., :-1]], -1), -1)
    return p * keep


def reference_monotonic(q, k, vals, params, real, noise, hard):
    """The reference decoder loop from alpha_0 = one-hot at 0: weights (B, H, TQ, S), contexts."""
    prev = torch.zeros(B, H, S)
    prev[..., 0] = 1.0
    rows = []
    for i in range(q.shape[2]):
        score = reference_energy(q[:, :, i], k, *params, real)
        if noise > 0:
            score = score + noise * torch.randn(score.shape)
        if hard:
            prev = reference_hard((score > 0).float(), prev)
        else:
            prev = reference_recursive(torch.sigmoid(score), prev)
        rows.append(prev)
    weights = torch.stack(rows, 2)
    return weights @ vals, weights


def _monotonic_case(cls=Monotonic, **options):
    torch.manual_seed(4)
    D = 8
    q, k, vals = (torch.randn(B, H, n, D) for n in (TQ, S, S))
    kernel = cls(heads=H, energy="additive", head_dim=D, **options)
    with torch.no_grad():
        kernel.energy.v.normal_()
        kernel.energy.g.uniform_(0.5, 2.0)
        kernel.energy.b.normal_()
        kernel.r.fill_(0.3)
    e = kernel.energy
    return kernel, (q, k, vals), (e.v, e.g, e.b, kernel.r)


def test_monotonic_additive_training_equals_tensorflow_with_the_same_noise():
    real, mask = _padding()
    kernel, (q, k, vals), params = _monotonic_case(noise=1.0)
    kernel.train()
    torch.manual_seed(11)
    out, w = kernel(q, k, vals, mask)
    torch.manual_seed(11)
    ref_out, ref_w = reference_monotonic(q, k, vals, params, real, noise=1.0, hard=False)
    torch.testing.assert_close(w, ref_w.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref_out.detach(), atol=1e-5, rtol=1e-5)
    torch.manual_seed(12)
    other = reference_monotonic(q, k, vals, params, real, noise=1.0, hard=False)[1]
    assert (w - other).abs().max() > 1e-3  # the noise is drawn and counts


def test_monotonic_additive_hard_decoding_equals_tensorflow_step_by_step():
    real, mask = _padding()
    kernel, (q, k, vals), params = _monotonic_case()
    kernel.eval()  # no noise at decoding (the reference is given sigmoid_noise=0 there)
    with torch.no_grad():
        ref_out, ref_w = reference_monotonic(q, k, vals, params, real, noise=0.0, hard=True)
        out, w = kernel(q, k, vals, mask)
        state = kernel.start_state(B, S, q.device)
        steps = [kernel(q[:, :, i : i + 1], k, vals, mask, None, state)[1] for i in range(TQ)]
    assert torch.equal(w, ref_w) and torch.equal(torch.cat(steps, 2), ref_w)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    assert ref_w.sum() > B * H  # it attends somewhere on most steps: the check has content


def test_additive_energy_starts_as_the_reference_initialises_it():
    heads, units = 3, 16
    energy = AdditiveEnergy(heads=heads, head_dim=units)
    assert torch.equal(energy.g, torch.full((heads,), (1.0 / units) ** 0.5))  # sqrt(1 / num_units)
    assert torch.equal(energy.b, torch.zeros(heads, units))


def test_mocha_takes_the_additive_energy_and_chunk_one_is_monotonic():
    _, mask = _padding()
    mono, (q, k, vals), _ = _monotonic_case()
    mocha, _, _ = _monotonic_case(MoChA, chunk=1)
    mono.eval(), mocha.eval()
    with torch.no_grad():
        torch.testing.assert_close(mocha(q, k, vals, mask), mono(q, k, vals, mask))


def test_monotonic_defaults_are_the_g2p_experiments_settings():
    from tfmr.experiments.g2p_alignment import MONOTONIC_NOISE, MONOTONIC_R

    for cls in (Monotonic, MoChA):
        kernel = cls(heads=2)
        assert kernel.noise == MONOTONIC_NOISE and torch.all(kernel.r.detach() == MONOTONIC_R)
        assert isinstance(kernel.energy, type(Monotonic(heads=1, energy="dot").energy))
    with pytest.raises(ValueError, match="energy must be one of dot, additive"):
        Monotonic(heads=2, energy="luong")


def test_the_alignment_experiments_help_states_the_monotonic_defaults(capsys):
    from tfmr.cli import main

    with pytest.raises(SystemExit):
        main(["experiment", "g2p-alignment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = Monotonic(heads=1)
    assert f"energy={defaults.energy_kind}, noise={defaults.noise:g}" in text
    assert f"r_init={float(defaults.r[0].detach()):g}" in text
