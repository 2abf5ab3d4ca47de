"""Hugging Face BERT (BertForMaskedLM) <-> tfmr.

BERT is an encoder-only, post-LN Transformer (https://arxiv.org/abs/1810.04805): token +
learned position + token-type embeddings, a LayerNorm on their sum (`embed_norm`), blocks of
norm(x + attention(x)) and norm(x + MLP(x)) with GELU (erf), and the masked-LM head (dense, GELU,
LayerNorm, then the output matrix tied to the token embedding, with a bias). LayerNorm eps is
1e-12. The pooler and the next-sentence head are left out (BertForMaskedLM has neither).
"""

from __future__ import annotations

from ..config import Choice, ModelConfig

ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
# transformers' BertConfig defaults, for a config.json that leaves a key out (tfmr.interop.hf_folder)
HF_DEFAULTS = {
    "bert": {
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "tie_word_embeddings": True,
    }
}


def config_from_hf(c) -> ModelConfig:
    if c.hidden_act not in ACTIVATIONS:
        raise ValueError(
            f"BERT activation {c.hidden_act!r} has no tfmr equivalent; known: {', '.join(ACTIVATIONS)}"
        )
    if getattr(c, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"BERT position_embedding_type {c.position_embedding_type!r} is not supported (absolute only)"
        )
    if getattr(c, "is_decoder", False):
        raise ValueError(
            "BERT as a decoder (is_decoder=True) is not supported; tfmr maps the encoder"
        )
    act = ACTIVATIONS[c.hidden_act]
    return ModelConfig(
        arch="encoder",
        vocab_size=c.vocab_size,
        dim=c.hidden_size,
        layers=c.num_hidden_layers,
        heads=c.num_attention_heads,
        context=c.max_position_embeddings,
        dropout=0.0,
        bias=True,
        tie_embeddings=getattr(c, "tie_word_embeddings", True),
        pos=Choice("learned"),
        kernel=Choice("sdpa"),
        ffn=Choice("mlp", hidden=c.intermediate_size, activation=act),
        norm=Choice("layernorm", eps=c.layer_norm_eps),
        residual=Choice("post"),
        head=Choice("mlm", activation=act, eps=c.layer_norm_eps),
        type_vocab_size=c.type_vocab_size,
        embed_norm=True,
        pad_id=None,
    )


def state_dict_from_hf(sd: dict, cfg: ModelConfig) -> dict:
    if "cls.predictions.bias" not in sd:
        raise ValueError(
            "tfmr maps BertForMaskedLM (encoder + masked-LM head); this BERT has no MLM head"
        )
    e, p = "bert.embeddings.", "cls.predictions."
    out = {
        "tok_emb.weight": sd[e + "word_embeddings.weight"],
        "pos.wpe.weight": sd[e + "position_embeddings.weight"],
        "type_emb.weight": sd[e + "token_type_embeddings.weight"],
        "embed_norm.weight": sd[e + "LayerNorm.weight"],
        "embed_norm.bias": sd[e + "LayerNorm.bias"],
        "lm_head.dense.weight": sd[p + "transform.dense.weight"],
        "lm_head.dense.bias": sd[p + "transform.dense.bias"],
        "lm_head.norm.weight": sd[p + "transform.LayerNorm.weight"],
        "lm_head.norm.bias": sd[p + "transform.LayerNorm.bias"],
        "lm_head.bias": sd.get(p + "decoder.bias", sd[p + "bias"]),
    }
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd[p + "decoder.weight"]
    for i in range(cfg.layers):
        h, b = f"bert.encoder.layer.{i}.", f"blocks.{i}."
        for ours, theirs in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
            out[f"{b}attn.{ours}.weight"] = sd[f"{h}attention.self.{theirs}.weight"]
            out[f"{b}attn.{ours}.bias"] = sd[f"{h}attention.self.{theirs}.bias"]
        pairs = {
            "attn.out_proj": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm",
            "ffn.w1": "intermediate.dense",
            "ffn.w2": "output.dense",
            "ffn_norm": "output.LayerNorm",
        }
        for ours, theirs in pairs.items():
            out[f"{b}{ours}.weight"] = sd[f"{h}{theirs}.weight"]
            out[f"{b}{ours}.bias"] = sd[f"{h}{theirs}.bias"]
    return {k: v.contiguous() for k, v in out.items()}
