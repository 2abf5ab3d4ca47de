"""The static-cache fast path computes what decode.py computes: same logits, same tokens, with
ragged prompts left-padded into one batch.

The compiled variant (torch.compile) is checked here only with TFMR_COMPILE_TESTS=1 (compiling
takes about a minute on a 2-core CPU); `tfmr bench gpu-decode --quick` checks it too.
"""

from __future__ import annotations

import os

import pytest
import torch

from tfmr import ModelConfig, build_model
from tfmr.config import Choice
from tfmr.decode import beam_search, greedy
from tfmr.fastdecode import FastDecoder


def _lm(seed=0, pos="learned"):
    torch.manual_seed(seed)
    model = build_model(
        ModelConfig(
            vocab_size=50, dim=32, layers=2, heads=4, kv_heads=2, context=40, pos=Choice(pos)
        )
    ).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # peaky: no near ties
    return model


PROMPTS = [[5, 9, 12, 3, 3], [7], [20, 21, 22, 23, 24, 25, 26, 27]]


def _left_padded(prompts, pad=0):
    P = max(map(len, prompts))
    ids = torch.full((len(prompts), P), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p) :] = torch.tensor(p)
        mask[i, P - len(p) :] = True
    return ids, mask


POSITIONS = ["learned", "sinusoidal", "none", "rope", "xpos", "alibi"]


@pytest.mark.parametrize("pos", POSITIONS)
def test_prefill_with_left_padding_gives_each_rows_own_logits(pos):
    model = _lm(pos=pos)
    ids, mask = _left_padded(PROMPTS)
    logits = FastDecoder(model, 3, 40).prefill(ids, mask)
    for i, p in enumerate(PROMPTS):
        with torch.no_grad():
            ref = model(torch.tensor([p])).logits[0, -1]
        torch.testing.assert_close(logits[i], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "pos", ["learned", "rope", "alibi"]
)  # one of each hook; prefill covers them all
def test_left_padded_batch_equals_one_by_one_greedy(pos):
    model = _lm(1, pos=pos)
    ids, mask = _left_padded(PROMPTS)
    eos = int(
        greedy(model, torch.tensor([PROMPTS[0]]), 16)[0, len(PROMPTS[0]) + 4]
    )  # row 0 ends early
    out = FastDecoder(model, 3, 40).generate(
        ids, 16, attention_mask=mask, eos_id=eos, pad_id=0, check_every=5
    )
    P = ids.shape[1]
    for i, p in enumerate(PROMPTS):
        ref = greedy(model, torch.tensor([p]), 16, eos_id=eos, pad_id=0)
        n = ref.shape[1] - len(p)
        assert torch.equal(out[i, P : P + n], ref[0, len(p) :])
        assert (out[i, P + n :] == 0).all()
    assert out.shape[1] - P < 16 or (out[0, P + 5 :] == 0).all()


def test_fast_beam_search_equals_decode_beam_search():
    model = _lm(2)
    ids = torch.tensor([[5, 9, 12, 3]])
    dec = FastDecoder(model, 4, 40)
    for eos, stop in [(None, False), (11, False), (11, True), (11, "never")]:
        ref = beam_search(model, ids, 4, 20, eos_id=eos, early_stopping=stop, n_best=3, pad_id=0)
        got = dec.beam_search(
            ids, 4, 20, eos_id=eos, early_stopping=stop, n_best=3, pad_id=0, check_every=3
        )
        assert torch.equal(got.ids, ref.ids), (eos, stop)
        torch.testing.assert_close(got.scores, ref.scores, atol=1e-5, rtol=1e-5)


def test_fast_sampling_with_top_k_1_is_greedy_and_seeds_reproduce():
    model = _lm(3)
    ids, mask = _left_padded(PROMPTS)
    dec = FastDecoder(model, 3, 40)
    g = dec.generate(ids, 10, attention_mask=mask)
    assert torch.equal(
        dec.generate(ids, 10, attention_mask=mask, temperature=1.0, top_k=1, seed=3), g
    )
    a = dec.generate(ids, 10, attention_mask=mask, temperature=1.5, seed=3)
    assert torch.equal(a, dec.generate(ids, 10, attention_mask=mask, temperature=1.5, seed=3))
    assert not torch.equal(a, g)


def test_fast_decoding_ends_in_the_models_own_tail(monkeypatch):
    """FastDecoder embeds with `model.embed` and runs the rest through `model.tail`, the spine's
    public tail (not the model's blocks, norm and head one by one): every step goes through it."""
    model = _lm(2)
    calls = []
    tail = model.tail
    monkeypatch.setattr(
        model, "tail", lambda *a, **kw: calls.append(kw["last_only"]) or tail(*a, **kw)
    )
    ids, mask = _left_padded(PROMPTS)
    out = FastDecoder(model, 3, 30).generate(ids, 6, attention_mask=mask)
    assert calls == [True] * 6  # the prefill and five steps
    monkeypatch.undo()
    assert torch.equal(out, FastDecoder(model, 3, 30).generate(ids, 6, attention_mask=mask))


def test_fast_decoder_refuses_what_it_cannot_do():
    model = _lm()
    with pytest.raises(ValueError, match="holds 2 rows of 40 tokens"):
        FastDecoder(model, 2, 40).generate(torch.zeros(3, 4, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="needs FastDecoder\\(batch=8\\)"):
        FastDecoder(model, 4, 40).beam_search(torch.zeros(2, 4, dtype=torch.long), 4, 5)
    with pytest.raises(
        ValueError, match="exceeds the 40 positions this model's Learned positions can place"
    ):
        FastDecoder(model, 1, 64)
    with pytest.raises(ValueError, match="decoder-only model takes no source"):
        FastDecoder(model, 1, 40).generate(
            torch.zeros(1, 4, dtype=torch.long), 5, src=torch.ones(1, 3, dtype=torch.long)
        )
    encoder = build_model(ModelConfig(arch="encoder", vocab_size=50, dim=32, layers=1, heads=4))
    with pytest.raises(ValueError, match="this one is an encoder"):
        FastDecoder(encoder, 1, 40)


# ------------------------------------------------------------------ encoder-decoder models
def _seq2seq(seed=0, cross_kernel=None, kernel="eager"):
    torch.manual_seed(seed)
    model = build_model(
        ModelConfig(
            arch="encoder-decoder",
            vocab_size=30,
            src_vocab_size=25,
            dim=32,
            layers=2,
            encoder_layers=2,
            heads=4,
            context=24,
            pad_id=0,
            kernel=Choice(kernel),
            share_embeddings=False,
            cross_kernel=cross_kernel,
        )
    ).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # peaky: no near ties
    return model


SOURCES = [[5, 9, 12, 3, 3, 7], [7, 2], [20, 21, 22, 23, 24, 11, 13, 4, 8]]


def _right_padded(sources):
    src = torch.zeros(len(sources), max(map(len, sources)), dtype=torch.long)  # pad id 0
    for i, s in enumerate(sources):
        src[i, : len(s)] = torch.tensor(s)
    return src


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_encoder_decoder_greedy_equals_decode_py_per_source(kernel):
    """Sources of different lengths in one batch (right-padded, the padding hidden from the
    encoder and from cross-attention): each row's greedy tokens equal decode.greedy on that source
    alone, for a one-token start (a decoding step) and a longer forced prefix (prefill)."""
    model = _seq2seq(kernel=kernel)
    src = _right_padded(SOURCES)
    for start in ([[1]] * 3, [[1, 6, 4]] * 3):
        ids = torch.tensor(start)
        out = FastDecoder(model, 3, 20).generate(ids, 12, src=src)
        for i, s in enumerate(SOURCES):
            ref = greedy(model, ids[i : i + 1], 12, src=torch.tensor([s]))
            assert torch.equal(out[i], ref[0]), (start, i)


def test_encoder_decoder_stops_at_eos_and_beam_search_equals_decode_py():
    model = _seq2seq(3)
    src = _right_padded(SOURCES)
    start = torch.ones(3, 1, dtype=torch.long)
    eos = int(greedy(model, start[:1], 3, src=src[:1])[0, 2])  # a token this model emits early
    out = FastDecoder(model, 3, 20).generate(start, 12, eos_id=eos, src=src, check_every=1)
    assert torch.equal(out, greedy(model, start, 12, eos_id=eos, src=src)[:, : out.shape[1]])
    fast = FastDecoder(model, 3 * 4, 20).beam_search(start, 4, 10, eos_id=eos, src=src)
    for i, s in enumerate(SOURCES):
        ref = beam_search(model, start[i : i + 1], 4, 10, eos_id=eos, src=torch.tensor([s]))
        assert torch.equal(fast[i, : ref.shape[1]], ref[0]), i


def test_encoder_decoder_refusals():
    model = _seq2seq()
    with pytest.raises(ValueError, match="needs its source"):
        FastDecoder(model, 1, 20).generate(torch.ones(1, 1, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="holds 1 sources of up to 24 tokens; got 1 of 30"):
        FastDecoder(model, 1, 20).generate(
            torch.ones(1, 1, dtype=torch.long), 5, src=torch.ones(1, 30, dtype=torch.long)
        )
    for kind in ("location", "monotonic"):
        with pytest.raises(ValueError, match="stateful cross-attention kernel"):
            FastDecoder(_seq2seq(cross_kernel=Choice(kind)), 1, 20)


PATTERNS = {
    "sliding": Choice("sliding", window=4),
    "longformer": Choice("longformer", window=3, global_tokens=2),
    "bigbird": Choice("bigbird", window=2, global_tokens=1, random_blocks=1, block=3, seed=2),
}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize("pos", ["learned", "alibi"])
def test_sparse_patterns_decode_like_decode_py_with_left_padding(pattern, pos):
    """The fast path evaluates the model's own pattern (window, global tokens, random blocks) at
    each row's positions: prefill logits per row and greedy tokens equal decode.py's (which uses
    a rolling cache for windows)."""
    torch.manual_seed(5)
    model = build_model(
        ModelConfig(
            vocab_size=50,
            dim=32,
            layers=2,
            heads=4,
            context=40,
            pos=Choice(pos),
            attention_pattern=PATTERNS[pattern],
        )
    ).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    ids, mask = _left_padded(PROMPTS)
    logits = FastDecoder(model, 3, 40).prefill(ids, mask)
    out = FastDecoder(model, 3, 40).generate(ids, 14, attention_mask=mask)
    P = ids.shape[1]
    for i, p in enumerate(PROMPTS):
        with torch.no_grad():
            ref = model(torch.tensor([p])).logits[0, -1]
        torch.testing.assert_close(logits[i], ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(out[i, P:], greedy(model, torch.tensor([p]), 14)[0, len(p) :])


@pytest.mark.skipif(
    os.environ.get("TFMR_COMPILE_TESTS") != "1", reason="set TFMR_COMPILE_TESTS=1 (about a minute)"
)
def test_compiled_step_gives_the_same_tokens():
    model = _lm(4)
    ids, mask = _left_padded(PROMPTS)
    eager = FastDecoder(model, 3, 40).generate(ids, 20, attention_mask=mask)
    compiled = FastDecoder(model, 3, 40, compile=True).generate(ids, 20, attention_mask=mask)
    assert torch.equal(compiled, eager)
    seq2seq, src = (
        _seq2seq(),
        _right_padded(SOURCES),
    )  # and an encoder-decoder (its encoder compiled per bucket)
    start = torch.ones(3, 1, dtype=torch.long)
    eager = FastDecoder(seq2seq, 3, 20).generate(start, 12, src=src)
    assert torch.equal(
        FastDecoder(seq2seq, 3, 20, compile=True).generate(start, 12, src=src), eager
    )


def test_fast_greedy_on_a_hugging_face_llama_equals_generate():
    """Outside reference for the fast path: RoPE at per-row positions, GQA, SwiGLU, RMSNorm."""
    transformers = pytest.importorskip("transformers")
    from tfmr.interop import FAMILIES, from_hf

    if "llama" not in FAMILIES:
        pytest.skip("tfmr.interop.from_hf does not support llama yet")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        hf.lm_head.weight.normal_(0.0, 1.0)  # peaky logits: no near ties
    ids, mask = _left_padded([[5, 9, 12, 3, 3], [7, 8]])
    ref = hf.generate(
        ids, attention_mask=mask.long(), do_sample=False, max_new_tokens=10, pad_token_id=0
    )
    assert torch.equal(FastDecoder(from_hf(hf), 2, 20).generate(ids, 10, attention_mask=mask), ref)
