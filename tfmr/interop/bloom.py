"""Hugging Face BLOOM <-> tfmr.

BLOOM (https://arxiv.org/abs/2211.05100) is a pre-LN decoder with ALiBi instead of position
vectors, a LayerNorm right after the token embedding (`embed_norm`), biased linear layers, a 4x
MLP with the tanh approximation of GELU and tied input/output embeddings. Its fused
`query_key_value` is laid out per head, (heads, 3, head_dim) along the output dimension, so q, k
and v are taken head by head. BLOOM writes ALiBi as +slope * (key position), tfmr as
-slope * |query - key|; under a causal mask the two differ by a per-row constant, which softmax
ignores. Left out: `apply_residual_connection_post_layernorm=True` (residual taken after the norm)
and the tensor-parallel `slow_but_exact` path.
"""

from __future__ import annotations

from ..config import Choice, ModelConfig

# transformers' BloomConfig defaults and its older key names (tfmr.interop.hf_folder)
HF_DEFAULTS = {
    "bloom": {
        "vocab_size": 250880,
        "hidden_size": 64,
        "n_layer": 2,
        "n_head": 8,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
    }
}
HF_ALIASES = {
    "n_embed": "hidden_size",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
}


def config_from_hf(c) -> ModelConfig:
    if getattr(c, "apply_residual_connection_post_layernorm", False):
        raise ValueError(
            "BLOOM with apply_residual_connection_post_layernorm=True is not supported"
        )
    return ModelConfig(
        arch="decoder",
        vocab_size=c.vocab_size,
        dim=c.hidden_size,
        layers=c.n_layer,
        heads=c.n_head,
        context=getattr(c, "seq_length", None) or 2048,
        dropout=0.0,
        bias=True,
        tie_embeddings=getattr(c, "tie_word_embeddings", True),
        embed_norm=True,
        pos=Choice("alibi"),
        kernel=Choice("sdpa"),
        ffn=Choice("mlp", hidden=4 * c.hidden_size, activation="gelu_tanh"),
        norm=Choice("layernorm", eps=c.layer_norm_epsilon),
        residual=Choice("pre"),
    )


def _split_qkv(t, heads: int):
    """(heads * 3 * head_dim, ...) laid out (heads, 3, head_dim) -> q, k, v each (heads * head_dim, ...)."""
    rest = t.shape[1:]
    per_head = t.view(heads, 3, t.shape[0] // (3 * heads), *rest)  # (H, 3, D, ...)
    return [per_head[:, i].reshape(-1, *rest) for i in range(3)]


def state_dict_from_hf(sd: dict, cfg: ModelConfig) -> dict:
    t = "transformer."
    out = {
        "tok_emb.weight": sd[t + "word_embeddings.weight"],
        "embed_norm.weight": sd[t + "word_embeddings_layernorm.weight"],
        "embed_norm.bias": sd[t + "word_embeddings_layernorm.bias"],
        "final_norm.weight": sd[t + "ln_f.weight"],
        "final_norm.bias": sd[t + "ln_f.bias"],
    }
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(cfg.layers):
        h, b = f"{t}h.{i}.", f"blocks.{i}."
        q, k, v = _split_qkv(sd[h + "self_attention.query_key_value.weight"], cfg.heads)
        qb, kb, vb = _split_qkv(sd[h + "self_attention.query_key_value.bias"], cfg.heads)
        out.update(
            {
                b + "attn.q_proj.weight": q,
                b + "attn.k_proj.weight": k,
                b + "attn.v_proj.weight": v,
                b + "attn.q_proj.bias": qb,
                b + "attn.k_proj.bias": kb,
                b + "attn.v_proj.bias": vb,
                b + "attn.out_proj.weight": sd[h + "self_attention.dense.weight"],
                b + "attn.out_proj.bias": sd[h + "self_attention.dense.bias"],
                b + "ffn.w1.weight": sd[h + "mlp.dense_h_to_4h.weight"],
                b + "ffn.w1.bias": sd[h + "mlp.dense_h_to_4h.bias"],
                b + "ffn.w2.weight": sd[h + "mlp.dense_4h_to_h.weight"],
                b + "ffn.w2.bias": sd[h + "mlp.dense_4h_to_h.bias"],
                b + "attn_norm.weight": sd[h + "input_layernorm.weight"],
                b + "attn_norm.bias": sd[h + "input_layernorm.bias"],
                b + "ffn_norm.weight": sd[h + "post_attention_layernorm.weight"],
                b + "ffn_norm.bias": sd[h + "post_attention_layernorm.bias"],
            }
        )
    return {k: v.contiguous() for k, v in out.items()}
