"""The contract of a cross-attention kernel tfmr has never seen: `window`, a stateful alignment
kernel defined here, outside the library, and registered by one line (monkeypatch) in
`alignment.ALIGNMENT_KERNELS`. It is docs/architecture.md's worked example, run for real.

    window   each target step attends with a softmax over the source positions within `width`
             of the previous step's expected position (a moving window, in the spirit of the
             windowing of Chorowski et al. 2015, section 2.3)

With no edit anywhere in tfmr/, it trains, survives a checkpoint round trip, decodes step by step
exactly like the full forward, is reordered by beam search, takes its option from the config and
is refused as a self-attention kernel.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_steps_match_full_forward, reversal_batch

from tfmr import Choice, ConfigError, ModelConfig, RunConfig, build_model, checkpoint, decode
from tfmr.alignment import ALIGNMENT_KERNELS, CROSS_KERNELS, AlignmentKernel
from tfmr.config import from_dict, to_dict

V, PAD, BOS, EOS = 12, 0, 1, 2  # 0 pad, 1 bos, 2 eos, 3.. symbols


class Windowed(AlignmentKernel):
    """A softmax over the source positions within `width` of the previous alignment's mean."""

    def __init__(self, heads: int, dropout: float = 0.0, width: int = 2):
        super().__init__(heads, dropout)
        self.width = width

    def step(self, prev, scores, keep):  # prev, scores (B, H, S); keep (B or 1, 1, S) or None
        where = torch.arange(scores.shape[-1], device=scores.device, dtype=torch.float32)
        centre = (prev * where).sum(-1, keepdim=True)  # (B, H, 1): the expected position
        inside = (where - centre).abs() <= self.width  # (B, H, S)
        if keep is not None:
            inside = inside & keep
        return scores.masked_fill(~inside, float("-inf")).softmax(-1)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(ALIGNMENT_KERNELS, "window", Windowed)


def _cfg(**fields) -> ModelConfig:
    base = dict(vocab_size=V, dim=32, layers=2, heads=4, context=16, pad_id=PAD)
    base.update(
        arch="encoder-decoder", kernel=Choice("eager"), cross_kernel=Choice("window", width=2)
    )
    return ModelConfig(**{**base, **fields})


def _src(B=3, S=7, seed=0):
    src = torch.randint(3, V, (B, S), generator=torch.Generator().manual_seed(seed))
    src[1, 4:] = PAD  # a padded row
    return src


def test_the_registered_kernel_is_a_cross_kernel_with_its_option(registered):
    assert CROSS_KERNELS["window"] is Windowed  # one line in ALIGNMENT_KERNELS is enough
    model = build_model(_cfg(cross_kernel=Choice("window", width=3)))
    kernels = [m for m in model.modules() if isinstance(m, Windowed)]
    assert len(kernels) == 2 and {k.width for k in kernels} == {3}  # one per decoder layer
    with pytest.raises(ConfigError, match="width"):  # an unknown option names the known ones
        build_model(_cfg(cross_kernel=Choice("window", widht=3)))


def test_it_is_refused_as_a_self_attention_kernel(registered):
    with pytest.raises(ConfigError, match="stateful cross-attention kernel"):
        build_model(_cfg(kernel=Choice("window")))


def test_step_by_step_decoding_equals_the_full_forward(registered):
    torch.manual_seed(0)
    model = build_model(_cfg()).eval()
    tgt = torch.randint(3, V, (3, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        state = assert_steps_match_full_forward(model, _src(), tgt, prefix=2, max_len=8)
    assert any(a is not None for a in state.align)  # the kernel's state was carried


def test_beam_search_reorders_its_state(registered):
    """Each n-best score equals the hypothesis' log-probability under the full forward."""
    torch.manual_seed(0)
    model = build_model(_cfg()).eval()
    src, start = _src(), torch.full((3, 1), BOS)
    nb = decode.beam_search(model, start, 4, 6, src=src, n_best=4, length_penalty=0.0)
    with torch.no_grad():
        for b in range(3):
            ids = nb.ids[b]  # (4, 1 + 6)
            logits = model(src[b : b + 1].expand(4, -1), ids[:, :-1]).logits.float()
            logp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1).sum(-1)
            torch.testing.assert_close(nb.scores[b], logp, atol=1e-4, rtol=1e-4)


def test_it_trains_and_round_trips_a_checkpoint(registered, tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(layers=1, encoder_layers=1)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g, fixed = (
        torch.Generator().manual_seed(0),
        reversal_batch(torch.Generator().manual_seed(9), 16, V),
    )
    with torch.no_grad():
        before = model.train()(*fixed).loss.item()
    for _ in range(30):
        loss = model.train()(*reversal_batch(g, 16, V)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = model.train()(*fixed).loss.item()
    assert after < before - 0.3, (before, after)

    model.eval()
    checkpoint.save(tmp_path / "ckpt", model, to_dict(RunConfig(model=cfg)))
    saved = from_dict(RunConfig, checkpoint.read_config(tmp_path / "ckpt"))
    assert saved.model.cross_kernel == Choice("window", width=2)
    loaded = build_model(saved.model).eval()
    checkpoint.load_weights(tmp_path / "ckpt", loaded)
    with torch.no_grad():
        assert torch.equal(loaded(*fixed[:2]).logits, model(*fixed[:2]).logits)
