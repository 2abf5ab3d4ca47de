"""Hugging Face Llama, Mistral and Mixtral <-> tfmr.

All three are pre-norm decoders with RMSNorm, RoPE (Hugging Face's rotate_half convention, which
tfmr's `rope` follows), grouped-query attention, no biases and a SwiGLU FFN:

    Llama     gate_proj / up_proj / down_proj -> ffn.w1 / w3 / w2        (swiglu)
    Mistral   the same, plus a sliding window (attention_pattern = sliding, window = sliding_window)
    Mixtral   the FFN is a mixture of SwiGLU experts, top-k with renormalised gates (moe);
              router `gate` -> ffn.router; each expert's gate/up/down -> ffn.experts.e.w1 / w3 / w2

Both expert layouts load: transformers 5 stacks the experts (`mlp.experts.gate_up_proj`
(E, 2I, dim), `mlp.experts.down_proj` (E, dim, I)); transformers 4 keeps one module per expert
(`block_sparse_moe.experts.e.w1/w2/w3`). Not mapped (refused with a message): a head_dim other
than hidden_size / heads, biases on only some projections, RoPE scaling other than linear.
"""

from __future__ import annotations

from ..config import Choice, ModelConfig

ROPE_TYPES = ("default", "linear")
_LLAMA = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
}
# transformers' defaults per model_type, for a config.json that leaves a key out (tfmr.interop.hf_folder)
HF_DEFAULTS = {
    "llama": _LLAMA,
    "mistral": {
        **_LLAMA,
        "intermediate_size": 14336,
        "num_key_value_heads": 8,
        "max_position_embeddings": 4096 * 32,
        "sliding_window": 4096,
    },
    "mixtral": {
        **_LLAMA,
        "intermediate_size": 14336,
        "num_key_value_heads": 8,
        "max_position_embeddings": 4096 * 32,
        "rope_theta": 1e6,
        "sliding_window": None,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "router_aux_loss_coef": 0.001,
    },
}


def _rope(c) -> Choice:
    """tfmr's rope Choice from the config (transformers 5 `rope_parameters` or 4 `rope_theta` / `rope_scaling`)."""
    params = dict(getattr(c, "rope_parameters", None) or {})
    scaling = dict(getattr(c, "rope_scaling", None) or {})
    theta = params.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    kind = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if kind not in ROPE_TYPES:
        raise ValueError(
            f"RoPE scaling {kind!r} has no tfmr equivalent; supported: {', '.join(ROPE_TYPES)}"
        )
    options = {"base": float(theta)}
    if kind == "linear":
        options["interpolation"] = float(params.get("factor", scaling.get("factor")))
    partial = params.get("partial_rotary_factor", getattr(c, "partial_rotary_factor", 1.0))
    if partial != 1.0:
        options["rotary_dim"] = int(c.hidden_size // c.num_attention_heads * partial)
    return Choice("rope", **options)


def _ffn(c) -> Choice:
    if c.hidden_act != "silu":
        raise ValueError(f"activation {c.hidden_act!r}: tfmr maps the SwiGLU (silu) FFN only")
    if c.model_type != "mixtral":
        return Choice("swiglu", hidden=c.intermediate_size)
    return Choice(
        "moe",
        experts=c.num_local_experts,
        top_k=c.num_experts_per_tok,
        expert="swiglu",
        hidden=c.intermediate_size,
        norm_topk=True,
        capacity_factor=0.0,
        balance_coef=float(getattr(c, "router_aux_loss_coef", 0.0)),
        z_coef=0.0,
    )


def config_from_hf(c) -> ModelConfig:
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    if head_dim * c.num_attention_heads != c.hidden_size:
        raise ValueError(
            f"head_dim {head_dim} x {c.num_attention_heads} heads != hidden_size {c.hidden_size}; "
            "tfmr's attention uses head_dim = dim / heads"
        )
    attn_bias, mlp_bias = getattr(c, "attention_bias", False), getattr(c, "mlp_bias", False)
    if c.model_type == "mixtral" and attn_bias:
        raise ValueError("Mixtral with attention biases is not supported (its experts have none)")
    if attn_bias != mlp_bias:
        raise ValueError("tfmr has one bias switch for all projections; attention_bias != mlp_bias")
    window = getattr(c, "sliding_window", None) if getattr(c, "use_sliding_window", True) else None
    pattern = Choice("sliding", window=int(window)) if window else Choice("dense")
    return ModelConfig(
        arch="decoder",
        vocab_size=c.vocab_size,
        dim=c.hidden_size,
        layers=c.num_hidden_layers,
        heads=c.num_attention_heads,
        kv_heads=c.num_key_value_heads or c.num_attention_heads,
        context=c.max_position_embeddings,
        dropout=0.0,
        bias=bool(attn_bias),
        tie_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
        pos=_rope(c),
        kernel=Choice("sdpa"),
        attention_pattern=pattern,
        ffn=_ffn(c),
        norm=Choice("rmsnorm", eps=c.rms_norm_eps),
        residual=Choice("pre"),
    )


def _experts(sd: dict, h: str, b: str, experts: int) -> dict:
    """Mixtral's router and experts, from either layout, as tfmr's per-expert linears."""
    out = {}
    if h + "mlp.experts.gate_up_proj" in sd:  # transformers 5: stacked experts
        gate_up, down = (
            sd[h + "mlp.experts.gate_up_proj"],
            sd[h + "mlp.experts.down_proj"],
        )  # (E, 2I, D), (E, D, I)
        hidden = gate_up.shape[1] // 2
        out[b + "ffn.router.weight"] = sd[h + "mlp.gate.weight"]
        for e in range(experts):
            out[f"{b}ffn.experts.{e}.w1.weight"] = gate_up[e, :hidden]  # gate
            out[f"{b}ffn.experts.{e}.w3.weight"] = gate_up[e, hidden:]  # up
            out[f"{b}ffn.experts.{e}.w2.weight"] = down[e]
        return out
    m = h + "block_sparse_moe."  # transformers 4: one module per expert, already named w1 / w2 / w3
    out[b + "ffn.router.weight"] = sd[m + "gate.weight"]
    for e in range(experts):
        for w in ("w1", "w2", "w3"):
            out[f"{b}ffn.experts.{e}.{w}.weight"] = sd[f"{m}experts.{e}.{w}.weight"]
    return out


def state_dict_from_hf(sd: dict, cfg: ModelConfig) -> dict:
    out = {
        "tok_emb.weight": sd["model.embed_tokens.weight"],
        "final_norm.weight": sd["model.norm.weight"],
    }
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(cfg.layers):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        for ours, theirs in (
            ("q_proj", "q_proj"),
            ("k_proj", "k_proj"),
            ("v_proj", "v_proj"),
            ("out_proj", "o_proj"),
        ):
            for kind in ("weight", "bias") if cfg.bias else ("weight",):
                out[f"{b}attn.{ours}.{kind}"] = sd[f"{h}self_attn.{theirs}.{kind}"]
        out[b + "attn_norm.weight"] = sd[h + "input_layernorm.weight"]
        out[b + "ffn_norm.weight"] = sd[h + "post_attention_layernorm.weight"]
        if cfg.ffn.kind == "moe":
            out.update(_experts(sd, h, b, cfg.ffn.options["experts"]))
            continue
        for ours, theirs in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
            for kind in ("weight", "bias") if cfg.bias else ("weight",):
                out[f"{b}ffn.{ours}.{kind}"] = sd[f"{h}mlp.{theirs}.{kind}"]
    return {k: v.contiguous() for k, v in out.items()}
