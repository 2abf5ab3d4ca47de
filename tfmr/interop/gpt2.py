"""Hugging Face GPT-2 <-> tfmr.

GPT-2 is a pre-LN decoder with learned positions, LayerNorm (eps 1e-5) with bias, a 4x MLP with
the tanh approximation of GELU, and tied input/output embeddings. Its projections are `Conv1D`
modules whose weights are stored (in, out): they are transposed into nn.Linear's (out, in), and
the fused `c_attn` is split into q, k and v.
"""

from __future__ import annotations

from ..config import Choice, ModelConfig

ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
}
# transformers' GPT2Config defaults, for a config.json that leaves a key out (tfmr.interop.hf_folder)
HF_DEFAULTS = {
    "gpt2": {
        "vocab_size": 50257,
        "n_positions": 1024,
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
    }
}


def config_from_hf(c) -> ModelConfig:
    if c.activation_function not in ACTIVATIONS:
        raise ValueError(f"GPT-2 activation {c.activation_function!r} has no tfmr equivalent")
    if getattr(c, "scale_attn_by_inverse_layer_idx", False) or getattr(
        c, "reorder_and_upcast_attn", False
    ):
        raise ValueError("GPT-2 variants with layer-scaled attention are not supported")
    return ModelConfig(
        arch="decoder",
        vocab_size=c.vocab_size,
        dim=c.n_embd,
        layers=c.n_layer,
        heads=c.n_head,
        context=c.n_positions,
        dropout=0.0,
        bias=True,
        tie_embeddings=True,
        pos=Choice("learned"),
        kernel=Choice("sdpa"),
        ffn=Choice(
            "mlp", hidden=c.n_inner or 4 * c.n_embd, activation=ACTIVATIONS[c.activation_function]
        ),
        norm=Choice("layernorm", eps=c.layer_norm_epsilon),
        residual=Choice("pre"),
    )


def state_dict_from_hf(sd: dict, cfg: ModelConfig) -> dict:
    out = {
        "tok_emb.weight": sd["transformer.wte.weight"],
        "pos.wpe.weight": sd["transformer.wpe.weight"],
        "final_norm.weight": sd["transformer.ln_f.weight"],
        "final_norm.bias": sd["transformer.ln_f.bias"],
    }
    for i in range(cfg.layers):
        h, b = f"transformer.h.{i}.", f"blocks.{i}."
        q, k, v = (
            sd[h + "attn.c_attn.weight"].t().chunk(3, dim=0)
        )  # Conv1D (in, 3*out) -> 3 x (out, in)
        qb, kb, vb = sd[h + "attn.c_attn.bias"].chunk(3)
        out.update(
            {
                b + "attn.q_proj.weight": q,
                b + "attn.k_proj.weight": k,
                b + "attn.v_proj.weight": v,
                b + "attn.q_proj.bias": qb,
                b + "attn.k_proj.bias": kb,
                b + "attn.v_proj.bias": vb,
                b + "attn.out_proj.weight": sd[h + "attn.c_proj.weight"].t(),
                b + "attn.out_proj.bias": sd[h + "attn.c_proj.bias"],
                b + "ffn.w1.weight": sd[h + "mlp.c_fc.weight"].t(),
                b + "ffn.w1.bias": sd[h + "mlp.c_fc.bias"],
                b + "ffn.w2.weight": sd[h + "mlp.c_proj.weight"].t(),
                b + "ffn.w2.bias": sd[h + "mlp.c_proj.bias"],
                b + "attn_norm.weight": sd[h + "ln_1.weight"],
                b + "attn_norm.bias": sd[h + "ln_1.bias"],
                b + "ffn_norm.weight": sd[h + "ln_2.weight"],
                b + "ffn_norm.bias": sd[h + "ln_2.bias"],
            }
        )
    return (
        out  # transposed views, and q, k, v slices of c_attn: hf_folder loads them without a copy
    )
