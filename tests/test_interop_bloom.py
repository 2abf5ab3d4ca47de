"""Outside reference: a random tiny Hugging Face BLOOM (ALiBi) loaded with from_hf gives the same
logits, in the full forward and in cached decoding, with every kernel."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tfmr.interop import from_hf  # noqa: E402
from tfmr.kernels import KERNELS  # noqa: E402


def _hf_bloom(seed=0, heads=4, **kw):
    torch.manual_seed(seed)
    cfg = transformers.BloomConfig(
        vocab_size=97,
        hidden_size=48,
        n_layer=3,
        n_head=heads,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        **kw,
    )
    model = transformers.BloomForCausalLM(cfg).eval()
    with torch.no_grad():  # random norms and biases so a mapping mistake there cannot hide
        for name, p in model.named_parameters():
            if "layernorm" in name or "ln_f" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
    return model


@pytest.mark.parametrize(
    "heads", [4, 6]
)  # 6: ALiBi slopes for a head count that is not a power of two
@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_bloom_logits_match_hugging_face(heads, kernel):
    hf = _hf_bloom(heads=heads)
    model = from_hf(hf)
    assert model.cfg.pos.kind == "alibi" and model.cfg.embed_norm
    for block in model.blocks:
        block.attn.kernel = KERNELS[kernel]()
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        ours = model(ids).logits
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_bloom_cached_decoding_matches_hugging_face_last_logits():
    hf = _hf_bloom(seed=1)
    model = from_hf(hf)
    ids = torch.randint(0, 97, (1, 14), generator=torch.Generator().manual_seed(2))
    state = model.start_state(1, 32)
    logits, state = model.step(ids[:, :5], state)
    for t in range(5, 14):
        logits, state = model.step(ids[:, t : t + 1], state)
    with torch.no_grad():
        ref = hf(ids).logits[:, -1]
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)


def test_bloom_greedy_generation_matches_hugging_face():
    from tfmr.decode import greedy

    hf = _hf_bloom(seed=2)
    model = from_hf(hf)
    prompt = torch.tensor([[5, 17, 42]])
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(greedy(model, prompt, 10), ref)


def test_bloom_untied_head_and_refused_variant():
    hf = _hf_bloom(tie_word_embeddings=False)
    model = from_hf(hf)
    assert model.lm_head.weight is not model.tok_emb.weight
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="apply_residual_connection_post_layernorm"):
        from_hf(_hf_bloom(apply_residual_connection_post_layernorm=True))
