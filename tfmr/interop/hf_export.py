"""Write a tfmr model as a Hugging Face folder (config.json, model.safetensors, tokenizer.json).

    from tfmr.interop.hf_export import to_hf_folder
    to_hf_folder(model, tokenizer, "out/", family=None)      # None: the first family that fits

A tfmr model can be written as a family only when every setting is one that family expresses:
EXPORTERS maps a family name to `(requirements(cfg, model) -> [reasons], config(cfg, model) ->
dict, state_dict(tfmr state) -> dict)`. A setting no family expresses (ALiBi in a GPT-2 shape,
DeepNorm, sliding windows in GPT-2, MoE, ...) is refused with one line naming it and the family.
After writing, the folder is read back with tfmr's own reader (hf_folder.from_pretrained) and its
logits compared with the model's, so a folder that would not reproduce the model is never left
behind. Exported families: GPT-2 (learned positions, LayerNorm, MLP, tied) and Llama / Mistral
(RoPE, RMSNorm, SwiGLU, GQA, optional sliding window). Left out: BLOOM, BERT, Marian, Mixtral.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..config import ConfigError

GPT2_ACTS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
# special tokens that start / end a text, by their usual spellings (GPT-2, Llama 1-2, Llama 3)
BOS_NAMES = ("<|endoftext|>", "<s>", "<|begin_of_text|>", "<bos>")
EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<|eot_id|>", "<eos>")


def _common(cfg, model) -> list[str]:
    """Settings neither exported family has."""
    reasons = []
    if cfg.arch != "decoder":
        reasons.append(f"arch {cfg.arch!r} (only decoder-only models are exported)")
    if cfg.embed_norm:
        reasons.append("embed_norm (a norm after the embeddings)")
    if cfg.residual.kind != "pre":
        reasons.append(f"residual {cfg.residual.kind!r} (both families are pre-norm)")
    if cfg.head.kind != "linear" or cfg.head.options.get("bias"):
        reasons.append(f"head {cfg.head.to_dict()} (a plain linear head without bias only)")
    if cfg.type_vocab_size:
        reasons.append("token-type embeddings")
    return reasons


def gpt2_requirements(cfg, model) -> list[str]:
    reasons = _common(cfg, model)
    wanted = (
        ("pos", cfg.pos.kind, "learned"),
        ("norm", cfg.norm.kind, "layernorm"),
        ("ffn", cfg.ffn.kind, "mlp"),
        ("attention_pattern", cfg.attention_pattern.kind, "dense"),
    )
    reasons += [
        f"{name} {have!r} (GPT-2 has {need!r})" for name, have, need in wanted if have != need
    ]
    if cfg.kv_heads not in (None, cfg.heads):
        reasons.append(f"kv_heads {cfg.kv_heads} (GPT-2 has no grouped-query attention)")
    if not cfg.bias:
        reasons.append("bias=False (GPT-2's linear layers and norms have biases)")
    if not cfg.tie_embeddings:
        reasons.append("tie_embeddings=False (GPT-2 ties the output matrix to the embedding)")
    if cfg.ffn.kind == "mlp" and model.blocks[0].ffn.activation not in GPT2_ACTS:
        reasons.append(
            f"activation {model.blocks[0].ffn.activation!r} (GPT-2 has {', '.join(GPT2_ACTS)})"
        )
    return reasons


def gpt2_config(cfg, model) -> dict:
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context,
        "n_embd": cfg.dim,
        "n_layer": cfg.layers,
        "n_head": cfg.heads,
        "n_inner": model.blocks[0].ffn.w1.out_features,
        "activation_function": GPT2_ACTS[model.blocks[0].ffn.activation],
        "layer_norm_epsilon": model.final_norm.eps,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": True,
    }


def gpt2_state(sd: dict, cfg) -> dict:
    out = {
        "transformer.wte.weight": sd["tok_emb.weight"],
        "transformer.wpe.weight": sd["pos.wpe.weight"],
        "transformer.ln_f.weight": sd["final_norm.weight"],
        "transformer.ln_f.bias": sd["final_norm.bias"],
    }
    for i in range(cfg.layers):
        h, b = f"transformer.h.{i}.", f"blocks.{i}."
        qkv = [sd[f"{b}attn.{p}_proj.weight"] for p in "qkv"]
        out[h + "attn.c_attn.weight"] = torch.cat(
            qkv, dim=0
        ).t()  # 3 x (out, in) -> Conv1D (in, 3*out)
        out[h + "attn.c_attn.bias"] = torch.cat([sd[f"{b}attn.{p}_proj.bias"] for p in "qkv"])
        for theirs, ours, conv in (
            ("attn.c_proj", "attn.out_proj", True),
            ("mlp.c_fc", "ffn.w1", True),
            ("mlp.c_proj", "ffn.w2", True),
            ("ln_1", "attn_norm", False),
            ("ln_2", "ffn_norm", False),
        ):
            weight = sd[f"{b}{ours}.weight"]
            out[f"{h}{theirs}.weight"] = weight.t() if conv else weight
            out[f"{h}{theirs}.bias"] = sd[f"{b}{ours}.bias"]
    return out


def llama_requirements(cfg, model) -> list[str]:
    reasons = _common(cfg, model)
    wanted = (
        ("pos", cfg.pos.kind, "rope"),
        ("norm", cfg.norm.kind, "rmsnorm"),
        ("ffn", cfg.ffn.kind, "swiglu"),
    )
    reasons += [
        f"{name} {have!r} (Llama has {need!r})" for name, have, need in wanted if have != need
    ]
    extra = (
        sorted(set(cfg.pos.options) - {"base", "interpolation"}) if cfg.pos.kind == "rope" else []
    )
    if extra:
        reasons.append(
            f"RoPE options {extra} (Llama's RoPE takes a base and linear interpolation only)"
        )
    if cfg.attention_pattern.kind not in ("dense", "sliding"):
        reasons.append(
            f"attention_pattern {cfg.attention_pattern.kind!r} (Llama is dense, Mistral sliding)"
        )
    return reasons


def llama_config(cfg, model) -> dict:
    sliding = cfg.attention_pattern.kind == "sliding"
    out = {
        "model_type": "mistral" if sliding else "llama",
        "architectures": ["MistralForCausalLM" if sliding else "LlamaForCausalLM"],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": model.blocks[0].ffn.w1.out_features,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads or cfg.heads,
        "head_dim": cfg.dim // cfg.heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context,
        "rms_norm_eps": model.final_norm.eps,
        "rope_theta": float(cfg.pos.options.get("base", 10000.0)),
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": cfg.bias,
        "mlp_bias": cfg.bias,
        "attention_dropout": 0.0,
    }
    if "interpolation" in cfg.pos.options:
        out["rope_scaling"] = {
            "rope_type": "linear",
            "factor": float(cfg.pos.options["interpolation"]),
        }
    if sliding:
        out["sliding_window"] = int(cfg.attention_pattern.options["window"])
    return out


def llama_state(sd: dict, cfg) -> dict:
    out = {
        "model.embed_tokens.weight": sd["tok_emb.weight"],
        "model.norm.weight": sd["final_norm.weight"],
    }
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    pairs = {
        "self_attn.q_proj": "attn.q_proj",
        "self_attn.k_proj": "attn.k_proj",
        "self_attn.v_proj": "attn.v_proj",
        "self_attn.o_proj": "attn.out_proj",
        "mlp.gate_proj": "ffn.w1",
        "mlp.up_proj": "ffn.w3",
        "mlp.down_proj": "ffn.w2",
    }
    for i in range(cfg.layers):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        for theirs, ours in pairs.items():
            for kind in ("weight", "bias") if cfg.bias else ("weight",):
                out[f"{h}{theirs}.{kind}"] = sd[f"{b}{ours}.{kind}"]
        out[h + "input_layernorm.weight"] = sd[b + "attn_norm.weight"]
        out[h + "post_attention_layernorm.weight"] = sd[b + "ffn_norm.weight"]
    return out


EXPORTERS = {
    "gpt2": (gpt2_requirements, gpt2_config, gpt2_state),
    "llama": (llama_requirements, llama_config, llama_state),
}


def pick_family(model, family: str | None = None) -> str:
    """The family to write `model` as: `family`, checked, or the first in EXPORTERS that fits."""
    cfg = model.cfg
    if family is not None and family not in EXPORTERS:
        raise ConfigError(
            f"cannot export to Hugging Face family {family!r}; exportable: {', '.join(EXPORTERS)}"
        )
    reasons = {}
    for name in [family] if family else EXPORTERS:
        reasons[name] = EXPORTERS[name][0](cfg, model)
        if not reasons[name]:
            return name
    why = "; ".join(f"{name}: {', '.join(r)}" for name, r in reasons.items())
    raise ConfigError(f"this model cannot be written as a Hugging Face model: {why}")


def tokenizer_json(tokenizer) -> dict | None:
    """The tokenizer as a Hugging Face tokenizer.json (None: a kind with no such form, e.g. char)."""
    from ..tokenizers.hf import HFTokenizer, to_hf_json

    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.data
    if getattr(tokenizer, "kind", None) == "bpe":
        return to_hf_json(tokenizer)
    return None


def special_tokens(tokenizer) -> dict[str, int]:
    """The special tokens of `tokenizer` (text -> id): a BPE's own, a tokenizer.json's special
    added tokens; none for a tokenizer without them (char) or no tokenizer."""
    from ..tokenizers.hf import HFTokenizer

    if isinstance(tokenizer, HFTokenizer):
        return {
            t["content"]: int(t["id"])
            for t in tokenizer.data.get("added_tokens") or []
            if t.get("special")
        }
    return dict(getattr(tokenizer, "special_tokens", None) or {})


def start_end_ids(tokenizer, vocab_size: int) -> dict[str, int | None]:
    """bos_token_id and eos_token_id for config.json, from the model's own tokenizer (the first of
    BOS_NAMES / EOS_NAMES it has, inside the vocabulary), else None. Written either way: left out,
    transformers would fill in its family's defaults (GPT-2's 50256), outside a small vocabulary."""
    specials = {text: i for text, i in special_tokens(tokenizer).items() if 0 <= i < vocab_size}
    first = lambda names: next((specials[n] for n in names if n in specials), None)  # noqa: E731
    return {"bos_token_id": first(BOS_NAMES), "eos_token_id": first(EOS_NAMES)}


def to_hf_folder(
    model, tokenizer, out, family: str | None = None, check: bool = True
) -> tuple[str, bool]:
    """Write `model` (and `tokenizer`) to the folder `out`; (family written, tokenizer written)."""
    from ..checkpoint import save_file  # safetensors' own, with the normal file mode
    from .hf_folder import from_pretrained

    family = pick_family(model, family)
    _, make_config, make_state = EXPORTERS[family]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        **make_config(model.cfg, model),
        **start_end_ids(tokenizer, model.cfg.vocab_size),
        "torch_dtype": str(next(model.parameters()).dtype).split(".")[-1],
    }
    state = {
        k: v.detach().contiguous().clone()
        for k, v in make_state(model.state_dict(), model.cfg).items()
    }
    partial = (
        out / "model.safetensors.partial"
    )  # then renamed: a model still reading the old file's map keeps it
    save_file(state, str(partial), metadata={"format": "pt"})
    os.replace(partial, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    data = tokenizer_json(tokenizer)
    if data is not None:
        (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    if check:
        _check_round_trip(model, from_pretrained(out).model, out)
    return config["model_type"], data is not None


@torch.no_grad()
def _check_round_trip(model, back, out: Path) -> None:
    ids = torch.arange(min(model.cfg.context, 16)).remainder(model.cfg.vocab_size)[None]  # (1, T)
    device = next(model.parameters()).device
    ours = model.eval()(ids.to(device)).logits.float().cpu()
    theirs = back.to(device)(ids.to(device)).logits.float().cpu()
    if not torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4):
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (out / name).unlink(missing_ok=True)
        raise ConfigError(
            f"{out}: the written folder did not reproduce the model's logits (a setting the export "
            "does not carry); its files were removed"
        )
