"""Attention sinks (`model.attention_pattern=sinks`) against a transcription of StreamingLLM.

The reference is mit-han-lab/streaming-llm: `StartRecentKVCache` (streaming_llm/kv_cache.py) and
the position-shifted Llama attention (streaming_llm/pos_shift/modify_llama.py), run the way its
streaming example feeds text: before each chunk of T tokens, `evict_for_space(past, T)` keeps the
first start_size positions and the last recent_size - T, then the chunk goes through the model with
that past. Transcribed below in this file's own words from the paper (Xiao et al. 2023, section
3.2: positions inside the cache) and that code: keys are cached unrotated and rotated at their
index in the cache, queries at past length + i, a causal mask over past + chunk (every past key
visible), no eviction inside a chunk.

tfmr's `evict=chunk` (cache.ChunkSinkCache) must give the same logits at every token of a stream
of chunks of mixed sizes, longer than the window among them (token for token, 1e-5), with
sinks = start_size and window = recent_size; `evict=slide` (the default) differs there and agrees
one token at a time. The reference's attention replaces tfmr's `Attention.forward` for its run
(monkeypatch), so embeddings, norms and feed-forwards are the same code on both sides.
"""

from __future__ import annotations

import pytest
import torch

from tfmr import Choice, ModelConfig, build_model
from tfmr.cache import ChunkSinkCache, SinkCache
from tfmr.mixers import Attention
from tfmr.patterns import Sinks

V, SINKS, WINDOW = 50, 2, 5
MIXED = (3, 4, 1, 5, 2, 1, 1, 6, 3, 7, 2, 4, 1)  # chunk sizes: 6 and 7 exceed the window


# ----------------------------------------------------------------------------- the reference, transcribed
class StartRecent:
    """StartRecentKVCache: per layer (k, v) with the sequence on dim 2."""

    def __init__(self, start_size: int, recent_size: int):
        self.start_size, self.recent_size = start_size, recent_size
        self.cache_size = start_size + recent_size

    def evict_for_space(self, past: list | None, num_coming: int) -> list | None:
        if past is None:
            return None
        seq_len = past[0][0].shape[2]
        if seq_len + num_coming <= self.cache_size:
            return past
        cut = seq_len - self.recent_size + num_coming  # the recent part kept starts here
        return [
            tuple(torch.cat((x[:, :, : self.start_size], x[:, :, cut:seq_len]), dim=2) for x in kv)
            for kv in past
        ]


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Llama's rotary embedding (rotate_half pairing) at `positions`: x (B, H, T, D)."""
    D = x.shape[-1]
    inv = base ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)  # (D/2,)
    ang = torch.cat((positions.float()[:, None] * inv,) * 2, dim=-1)  # (T, D)
    half = torch.cat((-x[..., D // 2 :], x[..., : D // 2]), dim=-1)
    return x * ang.cos() + half * ang.sin()


class Reference:
    """The streaming loop: one past per attention layer, evicted before every chunk."""

    def __init__(self):
        self.kv_cache = StartRecent(SINKS, WINDOW)
        self.past: list | None = None
        self.layer = 0
        self.new_past: list = []

    def attention(self, attn: Attention, x: torch.Tensor) -> torch.Tensor:
        """The position-shifted attention of one layer on chunk x (B, T, dim)."""
        B, T, _ = x.shape
        heads, D = attn.heads, attn.head_dim
        q = attn.q_proj(x).view(B, T, heads, D).transpose(1, 2)  # (B, H, T, D)
        k = attn.k_proj(x).view(B, T, heads, D).transpose(1, 2)
        v = attn.v_proj(x).view(B, T, heads, D).transpose(1, 2)
        past_len = 0 if self.past is None else self.past[self.layer][0].shape[2]
        q = rotate(q, torch.arange(past_len, past_len + T))  # queries at past length + i
        if self.past is not None:  # cached keys unrotated, then the new ones
            k = torch.cat((self.past[self.layer][0], k), dim=2)
            v = torch.cat((self.past[self.layer][1], v), dim=2)
        self.new_past.append((k, v))
        kv_len = k.shape[2]
        k = rotate(k, torch.arange(kv_len))  # keys at their index in the cache
        scores = q @ k.transpose(-2, -1) / D**0.5  # (B, H, T, kv_len)
        i, j = torch.arange(T)[:, None], torch.arange(kv_len)[None, :]
        scores = scores.masked_fill(j > past_len + i, float("-inf"))  # causal over past + chunk
        out = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, T, heads * D)
        self.layer += 1
        return attn.out_proj(out)

    def chunk(self, model, ids: torch.Tensor) -> torch.Tensor:
        """Evict room for the chunk, run it: logits (B, T, V)."""
        self.past = self.kv_cache.evict_for_space(self.past, ids.shape[1])
        self.layer, self.new_past = 0, []
        logits = model(ids).logits
        self.past = self.new_past
        return logits


def reference_logits(model, ids, sizes, monkeypatch) -> list[torch.Tensor]:
    ref = Reference()
    with monkeypatch.context() as m:
        m.setattr(Attention, "forward", lambda self, x, *a, **kw: (ref.attention(self, x), None))
        return [ref.chunk(model, c) for c in torch.split(ids, list(sizes), dim=1)]


# ----------------------------------------------------------------------------- tfmr
def _model(evict: str):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=V,
        dim=32,
        layers=2,
        heads=4,
        context=64,
        pos=Choice("rope"),
        kernel=Choice("eager"),
        attention_pattern=Choice("sinks", sinks=SINKS, window=WINDOW, evict=evict),
    )
    return build_model(cfg).eval()


def tfmr_logits(model, ids, sizes) -> list[torch.Tensor]:
    state, pos, out = model.start_state(ids.shape[0], ids.shape[1]), 0, []
    for c in torch.split(ids, list(sizes), dim=1):
        out.append(model(c, cache=state.cache, start=pos).logits)
        pos += c.shape[1]
    return out


def _ids(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (2, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sizes", [MIXED, (9, 2, 8, 1, 3)], ids=["mixed", "long-first-chunk"])
def test_evict_chunk_equals_streaming_llm_token_for_token(sizes, monkeypatch):
    """9 > sinks + window: the reference attends a first chunk that long whole, and so does tfmr."""
    model = _model("chunk")
    ids = _ids(sum(sizes))
    with torch.no_grad():
        ref = reference_logits(model, ids, sizes, monkeypatch)
        got = tfmr_logits(model, ids, sizes)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_evict_slide_differs_from_the_reference_on_chunks_and_agrees_token_by_token(monkeypatch):
    slide, chunk = _model("slide"), _model("chunk")
    ids = _ids(sum(MIXED))
    ones = (1,) * ids.shape[1]
    with torch.no_grad():
        ref = torch.cat(reference_logits(slide, ids, MIXED, monkeypatch), 1)
        assert (torch.cat(tfmr_logits(slide, ids, MIXED), 1) - ref).abs().max() > 1e-3
        ref = torch.cat(reference_logits(slide, ids, ones, monkeypatch), 1)
        for model in (slide, chunk):
            got = torch.cat(tfmr_logits(model, ids, ones), 1)
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_the_positions_each_chunk_sees_are_the_references():
    """The cache itself, fed position numbers as keys: before each chunk it hands back exactly the
    positions `evict_for_space` keeps, then the chunk; sinks + window slots whatever came."""
    cache = ChunkSinkCache(1, 1, SINKS, WINDOW, 1, torch.float32, "cpu")
    ref, past, pos = StartRecent(SINKS, WINDOW), None, 0
    for T in MIXED:
        new = torch.arange(pos, pos + T, dtype=torch.float32).view(1, 1, T, 1)
        held, _ = cache.update(new, new, pos)
        past = ref.evict_for_space(past, T)
        kv = new if past is None else torch.cat((past[0][0], new), dim=2)
        assert held.flatten().tolist() == kv.flatten().tolist()
        past, pos = [(kv, kv)], pos + T
    assert cache.bytes() == (SINKS + WINDOW) * 2 * 4


def test_evict_is_an_option_of_the_sinks_pattern():
    assert isinstance(Sinks(2, 5).new_cache(1, 1, 9, 4, torch.float32, "cpu"), SinkCache)
    chunked = Sinks(2, 5, evict="chunk").new_cache(1, 1, 9, 4, torch.float32, "cpu")
    assert isinstance(chunked, ChunkSinkCache)
    assert "evict=chunk" in repr(_model("chunk").pattern)
    with pytest.raises(ValueError, match="evict must be one of slide, chunk"):
        Sinks(2, 5, evict="drop")
