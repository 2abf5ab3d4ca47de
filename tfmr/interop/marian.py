"""Hugging Face Marian (MarianMTModel) <-> tfmr.

Marian (https://arxiv.org/abs/1804.00344; the OPUS-MT models) is a post-LN encoder-decoder:
token embeddings scaled by sqrt(dim) plus fixed sinusoidal positions laid out as all sines then
all cosines (`Sinusoidal(scale=True, halves=True)`), one table each for encoder and decoder; no
embedding norm and no final norms; SiLU ("swish") feed-forwards; one vocabulary shared by
encoder, decoder and output matrix; and `final_logits_bias` added to the logits (the linear
head's bias here). The decoder starts from the pad token (decoder_start_token_id).
"""

from __future__ import annotations

from ..config import Choice, ModelConfig

ACTIVATIONS = {
    "swish": "silu",
    "silu": "silu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "relu": "relu",
}
# transformers' MarianConfig defaults, for a config.json that leaves a key out (tfmr.interop.hf_folder)
HF_DEFAULTS = {
    "marian": {
        "vocab_size": 58101,
        "max_position_embeddings": 1024,
        "encoder_layers": 12,
        "decoder_layers": 12,
        "encoder_ffn_dim": 4096,
        "decoder_ffn_dim": 4096,
        "encoder_attention_heads": 16,
        "decoder_attention_heads": 16,
        "d_model": 1024,
        "activation_function": "gelu",
        "scale_embedding": False,
        "pad_token_id": 58100,
        "decoder_start_token_id": 58100,
        "tie_word_embeddings": True,
        "eos_token_id": 0,
        "forced_eos_token_id": 0,
    }
}


def config_from_hf(c) -> ModelConfig:
    if c.activation_function not in ACTIVATIONS:
        raise ValueError(f"Marian activation {c.activation_function!r} has no tfmr equivalent")
    if (
        c.encoder_attention_heads != c.decoder_attention_heads
        or c.encoder_ffn_dim != c.decoder_ffn_dim
    ):
        raise ValueError(
            "tfmr's encoder-decoder uses one head count and one FFN width for both stacks; "
            "this Marian config has different ones"
        )
    if getattr(c, "normalize_before", False):
        raise ValueError("pre-LN Marian variants (normalize_before=True) are not mapped")
    shared = getattr(c, "share_encoder_decoder_embeddings", True)
    tgt_vocab = getattr(c, "decoder_vocab_size", None) or c.vocab_size
    return ModelConfig(
        arch="encoder-decoder",
        vocab_size=tgt_vocab,
        src_vocab_size=c.vocab_size,
        dim=c.d_model,
        layers=c.decoder_layers,
        encoder_layers=c.encoder_layers,
        heads=c.encoder_attention_heads,
        context=c.max_position_embeddings,
        dropout=0.0,
        bias=True,
        tie_embeddings=getattr(c, "tie_word_embeddings", True),
        share_embeddings=shared,
        pos=Choice("sinusoidal", scale=bool(c.scale_embedding), halves=True),
        kernel=Choice("sdpa"),
        ffn=Choice("mlp", hidden=c.encoder_ffn_dim, activation=ACTIVATIONS[c.activation_function]),
        norm=Choice("layernorm", eps=1e-5),
        residual=Choice("post"),
        head=Choice("linear", bias=True),
        pad_id=c.pad_token_id,
    )


def _attention(sd: dict, theirs: str, ours: str) -> dict:
    return {
        f"{ours}.{p}.{w}": sd[f"{theirs}.{p}.{w}"]
        for p in ("q_proj", "k_proj", "v_proj", "out_proj")
        for w in ("weight", "bias")
    }


def _norm(sd: dict, theirs: str, ours: str) -> dict:
    return {f"{ours}.weight": sd[f"{theirs}.weight"], f"{ours}.bias": sd[f"{theirs}.bias"]}


def _ffn(sd: dict, h: str, b: str) -> dict:
    return {
        f"{b}ffn.w1.weight": sd[h + "fc1.weight"],
        f"{b}ffn.w1.bias": sd[h + "fc1.bias"],
        f"{b}ffn.w2.weight": sd[h + "fc2.weight"],
        f"{b}ffn.w2.bias": sd[h + "fc2.bias"],
    }


def state_dict_from_hf(sd: dict, cfg: ModelConfig) -> dict:
    out = {
        "tok_emb.weight": sd["model.decoder.embed_tokens.weight"]
        if "model.decoder.embed_tokens.weight" in sd
        else sd["model.shared.weight"],
        "lm_head.bias": sd["final_logits_bias"][0],
    }
    if not cfg.share_embeddings:
        out["src_emb.weight"] = sd["model.encoder.embed_tokens.weight"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(cfg.encoder_layers or cfg.layers):
        h, b = f"model.encoder.layers.{i}.", f"encoder.{i}."
        out.update(_attention(sd, h + "self_attn", b + "attn"))
        out.update(_norm(sd, h + "self_attn_layer_norm", b + "attn_norm"))
        out.update(_norm(sd, h + "final_layer_norm", b + "ffn_norm"))
        out.update(_ffn(sd, h, b))
    for i in range(cfg.layers):
        h, b = f"model.decoder.layers.{i}.", f"blocks.{i}."
        out.update(_attention(sd, h + "self_attn", b + "attn"))
        out.update(_attention(sd, h + "encoder_attn", b + "cross"))
        out.update(_norm(sd, h + "self_attn_layer_norm", b + "attn_norm"))
        out.update(_norm(sd, h + "encoder_attn_layer_norm", b + "cross_norm"))
        out.update(_norm(sd, h + "final_layer_norm", b + "ffn_norm"))
        out.update(_ffn(sd, h, b))
    return {k: v.contiguous() for k, v in out.items()}
