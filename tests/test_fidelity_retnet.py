"""RetNet's retention (`model.mixer=retention`) against torchscale's `MultiScaleRetention`.

The reference is microsoft/torchscale: torchscale/component/multiscale_retention.py and the
`RetNetRelPos` of torchscale/architecture/retnet.py, in two published states, transcribed below
in this file's own words from the paper (Sun et al. 2023, section 2) and that code:

    "2023"   the paper's code (commit d1fefe9, September 2023): biases, value_dim = 2 dim, a
             per-head LayerNorm without affine (GroupNorm), score rows over max(|sum|, 1)
    "today"  torchscale since commit fdd8838: no biases, any value_dim, a per-head RMSNorm without
             affine, score rows over sum |.| clamped to [1, 5e4], the chunk state over the last
             decay row sum (commit 05a9628)

Both normalise the decay rows by sqrt of their sums; their recurrent form carries the state
divided by sqrt(sum of decays) and normalises no scores; their chunkwise form divides by the
larger of the inner score rows' and the carried state's scales. Each form is compared with
tfmr's form at 1e-5, after loading the reference layer's random weights with
`tfmr.interop.torchscale.load_retention`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tfmr import Choice, ModelConfig, build_model
from tfmr.config import ConfigError
from tfmr.interop.torchscale import halves_from_pairs, load_retention, theta_base
from tfmr.masks import Mask
from tfmr.mixers import HeadRMSNorm, Retention
from tfmr.positions import Rope

DIM, HEADS, T, CHUNK = 32, 4, 12, 4
KEY_DIM = DIM // HEADS
ERAS = {
    "2023": dict(bias=True, value_dim=2 * DIM, eps=1e-5, norm="group", rows="paper"),
    "today": dict(bias=False, value_dim=48, eps=1e-6, norm="rms", rows="torchscale"),
}


# ----------------------------------------------------------------------------- the reference, transcribed
def turn_pairs(x, sin, cos):
    """theta_shift: each neighbour pair (x_2i, x_2i+1) turns by angle i: x cos + (-x_2i+1, x_2i) sin."""
    even, odd = x[..., ::2], x[..., 1::2]
    swapped = torch.stack((-odd, even), dim=-1).flatten(-2)
    return x * cos + swapped * sin


class ReferenceRelPos:
    """RetNetRelPos: the angles 10000^-linspace(0, 1, key_dim / 2), each used by a pair; the decays
    log(1 - 2^(-5-h)); the masks each form takes."""

    def __init__(self):
        angle = 1.0 / (10000 ** torch.linspace(0, 1, KEY_DIM // 2))
        self.angle = angle[:, None].repeat(1, 2).flatten()  # (key_dim,): a0 a0 a1 a1 ...
        self.decay = torch.log(1 - 2 ** (-5 - torch.arange(HEADS, dtype=torch.float)))  # (H,)

    def turns(self, positions):
        angles = positions[:, None].float() * self.angle[None, :]
        return angles.sin(), angles.cos()

    def decays(self, n):
        """(H, n, n): gamma^(i - j) on and below the diagonal, 0 above."""
        i = torch.arange(n).float()
        diff = i[:, None] - i[None, :]
        lower = torch.exp(diff.clamp(min=0)[None] * self.decay[:, None, None])
        return torch.where(diff[None] >= 0, lower, torch.zeros_like(lower))

    def parallel(self, n):
        mask = self.decays(n)
        return self.turns(torch.arange(n)), mask / mask.sum(-1, keepdim=True).sqrt()

    def recurrent(self, position):
        return self.turns(torch.tensor([position])), self.decay.exp()

    def chunkwise(self, n, era):
        mask = self.decays(CHUNK)
        root = mask.sum(-1, keepdim=True).sqrt()  # (H, C, 1)
        last = mask[:, -1].sum(-1)  # (H,): the last row's sum
        i = torch.arange(CHUNK).float()
        rise = torch.exp(self.decay[:, None] * (i + 1))[:, :, None]  # (H, C, 1): gamma^(i+1)
        if (
            era == "2023"
        ):  # values weighted by the normalised last row, queries by root_last / root_i
            value_w = (mask / root)[:, -1, :, None]
            query_w = rise / (root / root[:, -1:])
        else:  # values by the last row over its sum, queries by last / root_i
            value_w = (mask[:, -1] / last[:, None])[:, :, None]
            query_w = rise / (root / last[:, None, None])
        cross = torch.exp(self.decay * CHUNK)[:, None, None]
        return self.turns(torch.arange(n)), (mask / root, cross, query_w, value_w)


class ReferenceRMSNorm(nn.Module):
    """torchscale's RMSNorm(dim, eps, elementwise_affine=False), in float32."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


class ReferenceRetention(nn.Module):
    """MultiScaleRetention of one era: projections, Theta, the three forms, the head norm, the gate."""

    def __init__(self, era, eps):
        super().__init__()
        e = dict(ERAS[era], eps=eps)
        self.era, self.value_dim = era, e["value_dim"]
        self.head_dim = self.value_dim // HEADS
        self.q_proj = nn.Linear(DIM, DIM, bias=e["bias"])
        self.k_proj = nn.Linear(DIM, DIM, bias=e["bias"])
        self.v_proj = nn.Linear(DIM, self.value_dim, bias=e["bias"])
        self.g_proj = nn.Linear(DIM, self.value_dim, bias=e["bias"])
        self.out_proj = nn.Linear(self.value_dim, DIM, bias=e["bias"])
        if era == "2023":
            self.group_norm = nn.LayerNorm(self.head_dim, eps=e["eps"], elementwise_affine=False)
        else:
            self.group_norm = ReferenceRMSNorm(e["eps"])
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.g_proj):  # reset_parameters
            nn.init.xavier_uniform_(proj.weight, gain=2**-2.5)
        nn.init.xavier_uniform_(self.out_proj.weight)
        if e["bias"]:  # the 2023 code leaves the other biases at nn.Linear's draw
            nn.init.zeros_(self.out_proj.bias)

    def _qkvg(self, x, sin, cos):
        B, n, _ = x.shape
        q = self.q_proj(x).view(B, n, HEADS, KEY_DIM).transpose(1, 2)
        k = (self.k_proj(x) * KEY_DIM**-0.5).view(B, n, HEADS, KEY_DIM).transpose(1, 2)
        return turn_pairs(q, sin, cos), turn_pairs(k, sin, cos), self.v_proj(x), self.g_proj(x)

    def _finish(self, out, g, B, n):
        out = self.group_norm(out).reshape(B, n, self.value_dim)
        return self.out_proj(F.silu(g) * out)

    def parallel(self, x, rel):
        (sin, cos), mask = rel
        B, n, _ = x.shape
        q, k, v, g = self._qkvg(x, sin, cos)
        v = v.view(B, n, HEADS, self.head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) * mask
        if self.era == "2023":
            scores = scores / scores.detach().sum(-1, keepdim=True).abs().clamp(min=1)
        else:
            scores = scores / scores.detach().abs().sum(-1, keepdim=True).clamp(min=1, max=5e4)
        return self._finish((scores @ v).transpose(1, 2), g, B, n)

    def recurrent(self, x, rel, state):
        """One token x (B, 1, dim); `state` holds the scaled key-value product and the scale."""
        (sin, cos), decay = rel
        B = x.shape[0]
        q, k, v, g = self._qkvg(x, sin, cos)
        kv = k * v.view(B, HEADS, self.head_dim, 1)  # (B, H, Dv, Dk)
        if "kv" in state:
            scale = state["scale"] * decay + 1
            keep = (state["scale"].sqrt() * decay / scale.sqrt()).view(HEADS, 1, 1)
            kv = state["kv"] * keep + kv / scale.sqrt().view(HEADS, 1, 1)
        else:
            scale = torch.ones_like(decay)
        state["kv"], state["scale"] = kv, scale
        out = (q * kv).sum(3)  # (B, H, Dv)
        return self._finish(out, g, B, 1)

    def chunkwise(self, x, rel):
        (sin, cos), (inner_mask, cross_decay, query_w, value_w) = rel
        B, n, _ = x.shape
        chunks = n // CHUNK
        q, k, v, g = self._qkvg(x, sin, cos)
        q = q.view(B, HEADS, chunks, CHUNK, KEY_DIM).transpose(1, 2)  # (B, c, H, C, Dk)
        k = k.view(B, HEADS, chunks, CHUNK, KEY_DIM).transpose(1, 2)
        v = v.view(B, chunks, CHUNK, HEADS, self.head_dim).transpose(2, 3)  # (B, c, H, C, Dv)
        scores = (q @ k.transpose(-1, -2)) * inner_mask
        inner_scale = scores.detach().abs().sum(-1, keepdim=True).clamp(min=1)
        inner = (scores / inner_scale) @ v
        kv = k.transpose(-1, -2) @ (v * value_w)  # (B, c, H, Dk, Dv): each chunk's reduction
        state = torch.zeros(B, HEADS, KEY_DIM, self.head_dim)
        state_scale = torch.ones(B, HEADS, 1, 1)
        carried, carried_scale = [], []
        for c in range(chunks):
            carried.append(state / state_scale)
            carried_scale.append(state_scale)
            state = state * cross_decay + kv[:, c]
            state_scale = (
                state.detach().abs().sum(-2, keepdim=True).amax(-1, keepdim=True).clamp(min=1)
            )
        carried, carried_scale = torch.stack(carried, 1), torch.stack(carried_scale, 1)
        both = torch.maximum(inner_scale, carried_scale)
        cross = (q * query_w) @ carried
        out = inner / (both / inner_scale) + cross / (both / carried_scale)
        return self._finish(out.transpose(2, 3), g, B, n)


# ----------------------------------------------------------------------------- the same weights in tfmr
def _pair(era, seed=0, eps=None):
    torch.manual_seed(seed)
    e = dict(ERAS[era], eps=eps or ERAS[era]["eps"])
    ref = ReferenceRetention(era, e["eps"])
    mine = Retention(
        DIM,
        HEADS,
        bias=e["bias"],
        value_factor=e["value_dim"] / DIM,
        eps=e["eps"],
        norm=e["norm"],
        affine=False,
        rows=e["rows"],
    )
    return ref, load_retention(mine, ref.state_dict())


def _theta():
    return Rope(KEY_DIM, 64, base=theta_base(KEY_DIM))


def _x(B=2, n=T, seed=1, scale=1.0):
    return torch.randn(B, n, DIM, generator=torch.Generator().manual_seed(seed)) * scale


# (x's scale, the norm's epsilon): x at torchscale's init scale with the era's epsilon (every score
# row and state scale under 1: the clamps hold, the epsilon matters), and x 10 times larger (rows
# and states past 1: the clamps and maxima decide) with an epsilon of 1, so that the norm does not
# hide the per-row scales those choose
SCALES = [(1.0, None), (10.0, 1.0)]


@pytest.mark.parametrize("era", sorted(ERAS))
@pytest.mark.parametrize("scale, eps", SCALES)
def test_the_parallel_form_equals_torchscales(era, scale, eps):
    ref, mine = _pair(era, eps=eps)
    x = _x(scale=scale)
    with torch.no_grad():
        want = ref.parallel(x, ReferenceRelPos().parallel(T))
        got, _ = mine(x, _theta(), Mask(causal=True))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("era", sorted(ERAS))
@pytest.mark.parametrize("scale, eps", SCALES)
def test_the_recurrent_form_equals_torchscales(era, scale, eps):
    """One token at a time: tfmr's cached decoding against torchscale's recurrent_forward."""
    ref, mine = _pair(era, eps=eps)
    x, rel, state = _x(scale=scale), ReferenceRelPos(), {}
    cache = mine.new_cache(None, 2, T, torch.float32, "cpu")
    with torch.no_grad():
        for n in range(T):
            want = ref.recurrent(x[:, n : n + 1], rel.recurrent(n), state)
            got, _ = mine(x[:, n : n + 1], _theta(), Mask(causal=True, q_start=n), cache, n)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"token {n}")


@pytest.mark.parametrize("era", sorted(ERAS))
@pytest.mark.parametrize("scale, eps", SCALES)
def test_the_chunkwise_form_equals_torchscales(era, scale, eps):
    """Chunks of 4 through tfmr's cache against torchscale's chunk_recurrent_forward (chunk 4)."""
    ref, mine = _pair(era, eps=eps)
    x = _x(scale=scale)
    cache = mine.new_cache(None, 2, T, torch.float32, "cpu")
    with torch.no_grad():
        want = ref.chunkwise(x, ReferenceRelPos().chunkwise(T, era))
        got = torch.cat(
            [
                mine(x[:, s : s + CHUNK], _theta(), Mask(causal=True, q_start=s), cache, s)[0]
                for s in range(0, T, CHUNK)
            ],
            dim=1,
        )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("era", sorted(ERAS))
def test_gradients_equal_torchscales(era):
    """The parallel form in training, with the score rows past their clamp: the scales are
    detached on both sides, so the projections' gradients agree too."""
    ref, mine = _pair(era, eps=1.0)
    ref, mine = ref.double(), mine.double()  # float64: the sums of these gradients are long
    x = _x(scale=10.0).double()
    ref.parallel(x, ReferenceRelPos().parallel(T)).pow(2).sum().backward()
    mine(x, _theta(), Mask(causal=True))[0].pow(2).sum().backward()
    pairs = [
        (getattr(mine, name).weight.grad, getattr(ref, name).weight.grad)
        for name in ("v_proj", "g_proj", "out_proj")
    ]
    pairs.append((mine.q_proj.weight.grad, halves_from_pairs(ref.q_proj.weight.grad, HEADS)))
    for (
        got,
        want,
    ) in pairs:  # at 1e-5 of the largest gradient (the decays and angles are float32 on both sides)
        torch.testing.assert_close(got, want, atol=1e-5 * want.abs().max().item(), rtol=0)


@pytest.mark.parametrize("era", sorted(ERAS))
def test_leaving_the_rows_out_is_exact_only_up_to_the_epsilon(era):
    """tfmr's default (rows=none) at torchscale's init scale differs from torchscale by far more
    than 1e-5 (the norm's epsilon is not small beside these outputs); with eps -> 0 the rows stop
    mattering, which is why they were once left out."""
    ref, exact = _pair(era)
    e = ERAS[era]
    loose = load_retention(
        Retention(
            DIM,
            HEADS,
            bias=e["bias"],
            value_factor=e["value_dim"] / DIM,
            eps=e["eps"],
            norm=e["norm"],
            affine=False,
        ),
        ref.state_dict(),
    )
    x = _x()
    with torch.no_grad():
        want = ref.parallel(x, ReferenceRelPos().parallel(T))
        assert (loose(x, _theta(), Mask(causal=True))[0] - want).abs().max() > 1e-3
        for m in (exact, loose):
            m.norm.eps = 1e-30
        a, b = exact(x, _theta(), Mask(causal=True))[0], loose(x, _theta(), Mask(causal=True))[0]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_the_options_build_through_the_config_and_bad_ones_are_refused():
    model = build_model(
        ModelConfig(
            vocab_size=40,
            dim=DIM,
            heads=HEADS,
            layers=1,
            bias=False,
            mixer=Choice("retention", norm="rms", affine=False, rows="torchscale", eps=1e-6),
        )
    )
    layer = model.blocks[0].attn
    assert (
        isinstance(layer.norm, HeadRMSNorm)
        and layer.norm.weight is None
        and layer.rows == "torchscale"
    )
    assert "rows=torchscale" in repr(layer)
    assert isinstance(
        build_model(ModelConfig(mixer=Choice("retention", norm="none"))).blocks[0].attn.norm,
        nn.Identity,
    )
    with pytest.raises(ConfigError, match="unknown retention norm 'layer'"):
        build_model(ModelConfig(mixer=Choice("retention", norm="layer")))
    with pytest.raises(ConfigError, match="unknown retention rows 'sqrt'"):
        build_model(ModelConfig(mixer=Choice("retention", rows="sqrt")))


def test_the_loader_refuses_what_does_not_fit():
    ref, _ = _pair("2023")
    state = ref.state_dict()
    no_bias = Retention(DIM, HEADS, bias=False)
    with pytest.raises(ValueError, match="bias=True"):
        load_retention(no_bias, state)
    with pytest.raises(ValueError, match="missing g_proj.weight"):
        load_retention(
            Retention(DIM, HEADS), {k: v for k, v in state.items() if not k.startswith("g_proj")}
        )
    with pytest.raises(ValueError, match="v_proj.weight is"):
        load_retention(Retention(DIM, HEADS, value_factor=1.0), state)


def test_the_loader_turns_neighbour_pairs_into_halves():
    """Row h*D + i of the loaded q_proj is torchscale's h*D + 2i, row h*D + D/2 + i its h*D + 2i + 1;
    and theta_base gives RoPE torchscale's frequencies."""
    w = torch.arange(2 * 8 * 3, dtype=torch.float32).view(16, 3)  # two heads of 8
    out = halves_from_pairs(w, 2)
    for h in range(2):
        for i in range(4):
            assert torch.equal(out[h * 8 + i], w[h * 8 + 2 * i])
            assert torch.equal(out[h * 8 + 4 + i], w[h * 8 + 2 * i + 1])
    n = KEY_DIM // 2
    torch.testing.assert_close(
        _theta().inv_freq, 1.0 / 10000 ** torch.linspace(0, 1, n), atol=1e-7, rtol=1e-6
    )
    assert math.isclose(theta_base(KEY_DIM), 10000 ** (n / (n - 1)))
