"""Contracts for variants that tfmr has never seen: three classes defined here, outside the
library, registered by adding them to the registry dicts (monkeypatch), then run through
everything a built-in kind goes through, with no edit anywhere in tfmr/:

    factored      a new absolute position scheme: a learned low-rank table (context x rank, then
                  a rank -> dim projection); declares max_len = context and its embedding table
    log-distance  a new bias-style position scheme: -slope_h * log(1 + |i - j|) with learned
                  per-head slopes, described as a `Bias` the kernels evaluate
    bottleneck    a new FFN whose down projection is named `down` (not w2), declared as its
                  output projection

and the sequence mixers beside attention (mixers.py), through the same contracts:

    retention     every layer RetNet retention (`model.mixer=retention`)
    hybrid        retention and attention layers (`model.mixer_pattern=retention,attention`)

Mixers that declare `fast_decoding = False` (a recurrent state, not keys) are refused by
FastDecoder with a message naming tfmr.decode; that refusal is their fast-decoding contract.

Each one trains with tfmr.train.Trainer (config set with `--set`-style overrides), survives a
checkpoint round trip with identical logits, decodes step by step with a cache exactly like the
full forward (decoder-only, with a rolling sliding-window cache, and encoder-decoder), and decodes
with fastdecode.FastDecoder exactly like tfmr.decode.greedy on a left-padded batch.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_steps_match_full_forward
from torch import nn

from tfmr import Choice, ModelConfig, RunConfig, build_model, checkpoint
from tfmr.builder import max_positions
from tfmr.config import apply_override, from_dict
from tfmr.decode import greedy
from tfmr.fastdecode import FastDecoder
from tfmr.ffn import FFN, FFNS
from tfmr.masks import Bias
from tfmr.positions import POSITIONS, Position, positions_of
from tfmr.train import Trainer


# ----------------------------------------------------------------------------- the new variants
class FactoredLearned(Position):
    """Learned absolute positions through a low-rank table: wpe = rows (context, rank) @ up."""

    receives = ("dim", "context")  # from the build; `rank` is an option

    def __init__(self, dim: int, context: int, rank: int = 4):
        super().__init__()
        self.context = context
        self.rows = nn.Embedding(context, rank)
        self.up = nn.Linear(rank, dim, bias=False)

    @classmethod
    def max_len(cls, context: int) -> int | None:
        return context

    def embedding_weights(self) -> list[nn.Parameter]:
        return [self.rows.weight]

    def embed(self, x, start=0):
        return x + self.up(self.rows(positions_of(start, x.shape[1], x.device))).to(
            x.dtype
        )  # (B, T, dim)


class LogDistanceBias(Bias):
    """-slopes[h] * log(1 + |query position - key position|)."""

    def __init__(self, slopes: torch.Tensor):
        self.slopes = slopes  # (H,)

    def at(self, q_pos, k_pos):
        dist = torch.log1p((q_pos - k_pos).abs().to(torch.float32))  # (..., Tq, Tk)
        return -self.slopes.float()[:, None, None] * dist.unsqueeze(-3)  # (..., H, Tq, Tk)


class LogDistance(Position):
    """A bias-only scheme with a learned slope per head (no vectors added, nothing rotated)."""

    receives = ("heads",)

    def __init__(self, heads: int):
        super().__init__()
        self.slopes = nn.Parameter(torch.linspace(0.5, 2.0, heads))

    def bias(self, q_len, k_len, start=0):
        return LogDistanceBias(self.slopes)


class Bottleneck(FFN):
    """down(gelu(up x)): an MLP whose projections are called up and down."""

    output_projections = ("down",)

    def __init__(self, dim: int, bias: bool = True, dropout: float = 0.0, mult: float = 4):
        super().__init__()
        self.up = nn.Linear(dim, int(mult * dim), bias=bias)
        self.down = nn.Linear(int(mult * dim), dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.down(torch.nn.functional.gelu(self.up(x)))), None


# kind -> (--set overrides, ModelConfig fields)
VARIANTS = {
    "factored": (["model.pos=factored", "model.pos.rank=3"], {"pos": Choice("factored", rank=3)}),
    "log-distance": (["model.pos=log-distance"], {"pos": Choice("log-distance")}),
    "bottleneck": (
        ["model.ffn=bottleneck", "model.ffn.mult=2"],
        {"ffn": Choice("bottleneck", mult=2)},
    ),
    "retention": (["model.mixer=retention"], {"mixer": Choice("retention")}),
    "hybrid": (
        ["model.mixer=retention", "model.mixer_pattern=retention,attention"],
        {"mixer": Choice("retention"), "mixer_pattern": "retention,attention"},
    ),
}


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(POSITIONS, "factored", FactoredLearned)
    monkeypatch.setitem(POSITIONS, "log-distance", LogDistance)
    monkeypatch.setitem(FFNS, "bottleneck", Bottleneck)


def _model(kind, seed=0, **fields):
    torch.manual_seed(seed)
    shape = dict(vocab_size=50, dim=32, layers=2, heads=4, kv_heads=2, context=40)
    model = build_model(ModelConfig(**{**shape, **VARIANTS[kind][1], **fields})).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # peaky logits: no near ties between tokens
        for p in model.pos.parameters():
            p.mul_(4.0)  # positions that matter
    return model


# ----------------------------------------------------------------------------- the contracts
@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_trains_with_the_trainer_and_its_checkpoint_round_trips(
    kind, registered, tiny_cfg, tmp_path
):
    cfg = tiny_cfg
    for assignment in VARIANTS[kind][0]:
        apply_override(cfg, assignment)
    cfg.train.steps, cfg.train.eval_every, cfg.train.checkpoint_every = 40, 40, 40
    trainer = Trainer(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    before = trainer.evaluate()["train_loss"]
    last = trainer.fit()
    assert last["train_loss"] < before - 0.5, (before, last)  # it learns (3.2 -> 2.3 in 40 steps)

    saved = from_dict(RunConfig, checkpoint.read_config(trainer.ckpt_dir))
    loaded = build_model(saved.model)
    checkpoint.load_weights(trainer.ckpt_dir, loaded)
    ids = torch.randint(
        0, saved.model.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        assert torch.equal(loaded.eval()(ids).logits, trainer.model.eval()(ids).logits)


@pytest.mark.parametrize("kind", sorted(VARIANTS))
@pytest.mark.parametrize(
    "kernel, pattern",
    [("eager", Choice("dense")), ("sdpa", Choice("dense")), ("sdpa", Choice("sliding", window=3))],
)
def test_cached_decoding_equals_the_full_forward(kind, kernel, pattern, registered):
    """Decoder-only, prefix then one token at a time, with a static or a rolling cache (whose
    keys no longer start at position 0)."""
    model = _model(kind, kernel=Choice(kernel), attention_pattern=pattern)
    ids = torch.randint(0, 50, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).logits
        state = model.start_state(2, 11)
        logits, state = model.step(ids[:, :4], state)
        torch.testing.assert_close(logits, full[:, 3], atol=1e-5, rtol=1e-5)
        for t in range(4, 11):
            logits, state = model.step(ids[:, t : t + 1], state)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_encoder_decoder_cached_decoding_equals_the_full_forward(kind, registered):
    model = _model(kind, arch="encoder-decoder", kernel=Choice("eager"))
    g = torch.Generator().manual_seed(2)
    src, tgt = torch.randint(0, 50, (2, 7), generator=g), torch.randint(0, 50, (2, 6), generator=g)
    with torch.no_grad():
        assert_steps_match_full_forward(model, src, tgt, prefix=2, max_len=8)


PROMPTS = [[5, 9, 12, 3, 3], [7], [20, 21, 22, 23, 24, 25, 26, 27]]


@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_fast_decoding_equals_decode_greedy_on_a_left_padded_batch(kind, registered):
    model = _model(kind, seed=3)
    if not all(block.attn.fast_decoding for block in model.blocks):  # declared: decode.py only
        with pytest.raises(ValueError, match="use tfmr.decode"):
            FastDecoder(model, 3, 40)
        return
    P = max(map(len, PROMPTS))
    ids = torch.zeros(len(PROMPTS), P, dtype=torch.long)
    mask = torch.zeros(len(PROMPTS), P, dtype=torch.bool)
    for i, p in enumerate(PROMPTS):
        ids[i, P - len(p) :], mask[i, P - len(p) :] = torch.tensor(p), True
    logits = FastDecoder(model, 3, 40).prefill(ids, mask)
    out = FastDecoder(model, 3, 40).generate(ids, 16, attention_mask=mask)
    for i, p in enumerate(PROMPTS):
        with torch.no_grad():
            ref = model(torch.tensor([p])).logits[0, -1]
        torch.testing.assert_close(logits[i], ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(out[i, P:], greedy(model, torch.tensor([p]), 16)[0, len(p) :])


def test_declared_capabilities_are_what_tfmr_reads(registered):
    """max_len: the builder's max_positions and FastDecoder's refusal; embedding_weights: the
    non-embedding parameter count."""
    factored = _model("factored")
    assert max_positions(factored.cfg) == 40
    assert max_positions(_model("log-distance").cfg) is None
    with pytest.raises(
        ValueError, match="exceeds the 40 positions this model's FactoredLearned positions"
    ):
        FastDecoder(factored, 1, 41)
    total = sum(p.numel() for p in factored.parameters())
    assert (
        factored.num_params()
        == total - factored.tok_emb.weight.numel() - factored.pos.rows.weight.numel()
    )


def test_a_new_ffns_declared_down_projection_gets_the_depth_scaled_init(registered):
    """init std 0.02 for the up projection, 0.02 / sqrt(2 * layers) for `down` (and attention's
    out_proj), as for the built-in FFNs' w2."""
    layers, std = 8, 0.02
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            vocab_size=50, dim=256, layers=layers, heads=4, init_std=std, ffn=Choice("bottleneck")
        )
    )
    for block in model.blocks:
        assert block.ffn.up.weight.std().item() == pytest.approx(std, rel=0.02)
        assert block.ffn.down.weight.std().item() == pytest.approx(
            std / math.sqrt(2 * layers), rel=0.02
        )
        assert block.attn.out_proj.weight.std().item() == pytest.approx(
            std / math.sqrt(2 * layers), rel=0.03
        )
    deep = build_model(
        ModelConfig(
            vocab_size=50,
            dim=256,
            layers=layers,
            heads=4,
            ffn=Choice("bottleneck"),
            residual=Choice("deepnorm"),
        )
    )
    beta = (8 * layers) ** -0.25
    ffn = deep.blocks[
        1
    ].ffn  # DeepNorm scales the FFN's value projections (all of its Linears) by beta
    assert ffn.down.weight.std().item() == pytest.approx(
        beta * math.sqrt(2 / (256 + 1024)), rel=0.03
    )
    assert ffn.up.weight.std().item() == pytest.approx(beta * math.sqrt(2 / (256 + 1024)), rel=0.03)
