"""Transformer-XL segment recurrence (Dai et al. 2019): `model.new_memory(M)` passed as `cache=`
to consecutive segments. Each layer's keys and values come from [SG(memory); segment], the
memory being that layer's input on the previous segment; positions are relative to the memory
(RoPE, ALiBi through the position seam)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tfmr import Choice, ModelConfig, build_model
from tfmr.masks import Mask
from tfmr.patterns import Dense

T = 5  # segment length (and memory length)


def _model(pos="rope", **kw):
    torch.manual_seed(0)
    return build_model(
        ModelConfig(
            vocab_size=50,
            dim=32,
            layers=2,
            heads=4,
            context=16,
            pos=Choice(pos),
            kernel=Choice("eager"),
            tie_embeddings=False,
            **kw,
        )
    )


@dataclasses.dataclass
class SegmentMask(Mask):
    """Query p sees keys k <= p of its own segment and every key of the segment before."""

    seg: int = T

    def allowed(self, q_pos, k_pos, table=None):
        return (k_pos <= q_pos) & (k_pos >= (q_pos // self.seg - 1) * self.seg)


class SegmentPattern(Dense):
    def mask(self, causal, q_start=0, key_padding=None):
        return SegmentMask(causal=True, q_start=q_start, key_padding=key_padding)


@pytest.mark.parametrize(
    "pos, pattern", [("rope", ""), ("alibi", ""), ("none", ""), ("rope", "retention,attention")]
)
def test_segments_with_memory_equal_one_forward_under_the_segment_mask(pos, pattern):
    """Three segments of T with memory T: segment 2 equals one causal forward over [s1; s2]; all
    three equal one forward over [s1; s2; s3] where each segment sees itself (causally) and the
    whole previous segment, which is what recurrence with a one-segment memory computes."""
    model = _model(
        pos, mixer=Choice("retention") if pattern else Choice("attention"), mixer_pattern=pattern
    ).eval()
    ids = torch.randint(0, 50, (2, 3 * T), generator=torch.Generator().manual_seed(1))
    mems = model.new_memory(T)
    with torch.no_grad():
        outs = [model(ids[:, s * T : (s + 1) * T], cache=mems).logits for s in range(3)]
        torch.testing.assert_close(
            outs[1], model(ids[:, : 2 * T]).logits[:, T:], atol=1e-5, rtol=1e-5
        )
        if pattern:  # retention's state carries everything before, not one segment: no block mask
            return
        model.pattern = SegmentPattern()
        full = model(ids).logits
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


def test_no_gradient_flows_into_the_memory():
    """Segment 2's loss in training mode: the embeddings of tokens only in segment 1 get no
    gradient (the memory is detached), while in one forward over [s1; s2] they do."""
    model = _model("rope").train()
    g = torch.Generator().manual_seed(2)
    s1, s2 = torch.randint(0, 25, (2, T), generator=g), torch.randint(25, 50, (2, T), generator=g)
    mems = model.new_memory(T)
    model(s1, cache=mems)
    assert all(not m.h.requires_grad for m in mems)
    model(s2, torch.roll(s2, -1, 1), cache=mems).loss.backward()
    assert model.tok_emb.weight.grad[:25].abs().max() == 0
    assert model.tok_emb.weight.grad[25:].abs().max() > 0
    model.zero_grad()
    targets = torch.cat(
        (torch.full_like(s1, -100), torch.roll(s2, -1, 1)), dim=1
    )  # the same loss, one forward
    model(torch.cat((s1, s2), dim=1), targets).loss.backward()
    assert model.tok_emb.weight.grad[:25].abs().max() > 0


def test_memory_keeps_the_last_length_tokens_and_refuses_absolute_positions():
    model = _model("rope").eval()
    mems = model.new_memory(3)
    with torch.no_grad():
        model(torch.zeros(1, 4, dtype=torch.long), cache=mems)
        model(torch.zeros(1, 2, dtype=torch.long), cache=mems)
    assert [tuple(m.h.shape) for m in mems] == [(1, 3, 32)] * 2
    with pytest.raises(ValueError, match="relative to the memory"):
        _model("learned").new_memory(3)
