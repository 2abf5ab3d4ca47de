"""Outside reference: a random tiny Hugging Face GPT-2 loaded with from_hf gives the same logits."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tfmr.interop import from_hf  # noqa: E402


def _hf_gpt2(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=97,
        n_positions=64,
        n_embd=32,
        n_layer=3,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **kw,
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # random LayerNorm affine so a mapping mistake there cannot hide
        for name, p in model.named_parameters():
            if "ln" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    return model


@pytest.mark.parametrize("activation", ["gelu_new", "relu"])
def test_gpt2_logits_match_hugging_face(activation):
    hf = _hf_gpt2(activation_function=activation)
    model = from_hf(hf)
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        ours = model(ids).logits
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_gpt2_cached_decoding_matches_hugging_face_last_logits():
    hf = _hf_gpt2()
    model = from_hf(hf)
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(2))
    state = model.start_state(1, 64)
    logits, state = model.step(ids[:, :6], state)
    for t in range(6, 12):
        logits, state = model.step(ids[:, t : t + 1], state)
    with torch.no_grad():
        ref = hf(ids).logits[:, -1]
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)


def test_unknown_family_is_refused_by_name():
    class Fake:
        class config:
            model_type = "rwkv"

    with pytest.raises(ValueError, match="no tfmr mapping for Hugging Face model_type 'rwkv'"):
        from_hf(Fake())
