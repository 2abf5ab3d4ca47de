"""Outside reference: random tiny Hugging Face Llama, Mistral and Mixtral models loaded with
from_hf give the same logits (float32, atol 1e-4), also through cached decoding, where Mistral's
sliding window is shorter than the sequence."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tfmr.interop import from_hf  # noqa: E402

VOCAB = 97
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    attention_dropout=0.0,
)


def _rope(theta: float, **extra) -> dict:
    return {"rope_parameters": {"rope_type": "default", "rope_theta": theta, **extra}}


def _hf(kind: str, seed: int = 0, **kw):
    config_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "mixtral": (transformers.MixtralConfig, transformers.MixtralForCausalLM),
    }[kind]
    options = {**COMMON, **_rope(10000.0), **kw}
    torch.manual_seed(seed)
    model = model_cls(config_cls(**options, attn_implementation="eager")).eval()
    with torch.no_grad():  # random RMSNorm gains so a mapping mistake there cannot hide
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.2)
    return model


IDS = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))


def _assert_same_logits(hf, model, ids=IDS):
    with torch.no_grad():
        ref = hf(ids).logits
        ours = model(ids).logits
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"tie_word_embeddings": True, **_rope(500000.0)},
        {"num_key_value_heads": 4},  # MHA
        {
            "num_key_value_heads": 1,
            **_rope(10000.0, rope_type="linear", factor=2.0),
        },  # MQA, linear RoPE scaling
    ],
)
def test_llama_logits_match_hugging_face(options):
    hf = _hf("llama", **options)
    model = from_hf(hf)
    assert (
        model.cfg.ffn.kind == "swiglu"
        and model.cfg.norm.kind == "rmsnorm"
        and model.cfg.pos.kind == "rope"
    )
    _assert_same_logits(hf, model)


def _decode_last(model, ids, prefill=5):
    state = model.start_state(ids.shape[0], 64)
    logits, state = model.step(ids[:, :prefill], state)
    out = [logits]
    for t in range(prefill, ids.shape[1]):
        logits, state = model.step(ids[:, t : t + 1], state)
        out.append(logits)
    return torch.stack(out[1:], dim=1)  # (B, T - prefill, V) for positions prefill..T-1


def test_mistral_sliding_window_logits_match_hugging_face():
    hf = _hf("mistral", sliding_window=6)  # the window is shorter than the 20-token sequence
    model = from_hf(hf)
    assert model.cfg.attention_pattern.to_dict() == {"kind": "sliding", "window": 6}
    _assert_same_logits(hf, model)
    with torch.no_grad():
        ref = hf(IDS).logits
    torch.testing.assert_close(_decode_last(model, IDS), ref[:, 5:], atol=1e-4, rtol=1e-4)
    # the window matters: with a full window, the last positions' logits differ
    wide = _hf("mistral", sliding_window=None)
    with torch.no_grad():
        assert not torch.allclose(wide(IDS).logits[:, -1], ref[:, -1], atol=1e-3)


@pytest.mark.parametrize("experts, top_k", [(4, 2), (3, 1)])
def test_mixtral_logits_match_hugging_face(experts, top_k):
    hf = _hf(
        "mixtral", num_local_experts=experts, num_experts_per_tok=top_k, router_aux_loss_coef=0.02
    )
    model = from_hf(hf)
    ffn = model.blocks[0].ffn
    assert (ffn.num_experts, ffn.top_k, ffn.balance_coef) == (experts, top_k, 0.02)
    _assert_same_logits(hf, model)
    with torch.no_grad():
        ref = hf(IDS).logits
    torch.testing.assert_close(_decode_last(model, IDS), ref[:, 5:], atol=1e-4, rtol=1e-4)


def test_llama_greedy_generation_matches_hugging_face():
    from tfmr.decode import greedy

    hf = _hf("llama", seed=3)
    model = from_hf(hf)
    prompt = IDS[:1, :6]
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    torch.testing.assert_close(greedy(model, prompt, 12), ref)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"head_dim": 16}, "head_dim 16 x 4 heads != hidden_size 32"),
        ({"attention_bias": True}, "one bias switch"),
        (
            _rope(10000.0, rope_type="dynamic", factor=2.0),
            "RoPE scaling 'dynamic' has no tfmr equivalent",
        ),
    ],
)
def test_unsupported_llama_variants_are_refused_by_name(options, message):
    hf_config = transformers.LlamaConfig(**{**COMMON, **_rope(10000.0), **options})
    from tfmr.interop import llama

    with pytest.raises(ValueError, match=message):
        llama.config_from_hf(hf_config)
