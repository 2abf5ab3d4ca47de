"""Outside references: random tiny Hugging Face BERT (masked LM) and Marian (MT) models loaded
with from_hf give the same logits, with and without padding, and Marian decodes step by step
to the same logits as Hugging Face's full forward."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tfmr.interop import from_hf  # noqa: E402


def _randomize_norms(model):
    """Random LayerNorm affine and biases, so a mapping mistake there cannot hide behind 1s and 0s."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
        for name, b in model.named_buffers():
            if name.endswith("final_logits_bias"):
                b.normal_(0.0, 0.5)
    return model


def _hf_bert(**kw):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
        type_vocab_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **kw,
    )
    return _randomize_norms(transformers.BertForMaskedLM(cfg).eval())


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_bert_mlm_logits_match_hugging_face(act):
    hf = _hf_bert(hidden_act=act)
    model = from_hf(hf)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 99, (2, 15), generator=g)
    types = torch.randint(0, 2, (2, 15), generator=g)
    with torch.no_grad():
        ref = hf(ids, token_type_ids=types).logits
        ours = model(ids, token_type_ids=types).logits
        ref0 = hf(ids).logits  # token types default to 0 on both sides
        ours0 = model(ids).logits
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours0, ref0, atol=1e-4, rtol=1e-4)
    assert model.lm_head.weight is model.tok_emb.weight


def test_bert_padding_mask_matches_hugging_face_attention_mask():
    hf = _hf_bert()
    model = from_hf(hf)
    ids = torch.randint(0, 99, (2, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask).logits
        ours = model(ids, padding_mask=mask.bool()).logits
        alone = model(ids[1:, :7]).logits  # the padded row, cut to its real tokens
    torch.testing.assert_close(ours[0], ref[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours[1, :7], ref[1, :7], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours[1, :7], alone[0], atol=1e-4, rtol=1e-4)


def _hf_marian(**kw):
    torch.manual_seed(0)
    cfg = transformers.MarianConfig(
        vocab_size=101,
        d_model=32,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=100,
        decoder_start_token_id=100,
        eos_token_id=0,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        **kw,
    )
    return _randomize_norms(transformers.MarianMTModel(cfg).eval())


def test_marian_logits_match_hugging_face():
    hf = _hf_marian()
    model = from_hf(hf)
    g = torch.Generator().manual_seed(3)
    src = torch.randint(0, 100, (2, 11), generator=g)
    tgt = torch.cat([torch.full((2, 1), 100), torch.randint(0, 100, (2, 8), generator=g)], dim=1)
    with torch.no_grad():
        ref = hf(input_ids=src, decoder_input_ids=tgt).logits
        ours = model(src, tgt).logits
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    assert model.src_emb.weight is model.tok_emb.weight is model.lm_head.weight


def test_marian_padded_source_and_cached_decoding_match_hugging_face():
    hf = _hf_marian()
    model = from_hf(hf)
    g = torch.Generator().manual_seed(4)
    src = torch.randint(0, 100, (2, 9), generator=g)
    src[1, 6:] = 100  # pad
    mask = (src != 100).long()
    tgt = torch.cat([torch.full((2, 1), 100), torch.randint(0, 100, (2, 6), generator=g)], dim=1)
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
    torch.testing.assert_close(model(src, tgt).logits, ref, atol=1e-4, rtol=1e-4)
    state = model.start_state(2, 16, src)
    logits, state = model.step(tgt[:, :1], state)
    torch.testing.assert_close(logits, ref[:, 0], atol=1e-4, rtol=1e-4)
    for t in range(1, tgt.shape[1]):
        logits, state = model.step(tgt[:, t : t + 1], state)
        torch.testing.assert_close(logits, ref[:, t], atol=1e-4, rtol=1e-4)


def test_marian_positions_are_sines_then_cosines():
    hf = _hf_marian()
    model = from_hf(hf)
    table = hf.model.encoder.embed_positions.weight
    torch.testing.assert_close(model.enc_pos.table[:64], table, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        model.pos.table[:64], hf.model.decoder.embed_positions.weight, atol=1e-6, rtol=1e-5
    )
