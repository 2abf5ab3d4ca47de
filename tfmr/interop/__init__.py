"""Interop: load Hugging Face models into tfmr with the same weights and the same logits.

    from tfmr.interop import from_hf
    model = from_hf(hf_model)        # a transformers PreTrainedModel instance

Foreign names are mapped here, at the boundary; tfmr's own modules keep tfmr's names. Each family
has one module with `config_from_hf(hf_config) -> ModelConfig` and
`state_dict_from_hf(hf_state_dict, cfg) -> dict` for tfmr's parameter names. `transformers` is
only needed by the caller (it is a test extra), never imported here.
"""
from __future__ import annotations

import torch

from ..builder import build_model
from . import bert, bloom, gpt2, llama, marian

FAMILIES = {"gpt2": gpt2, "bloom": bloom, "llama": llama, "mistral": llama, "mixtral": llama,
            "bert": bert, "marian": marian}


def from_hf(hf_model) -> torch.nn.Module:
    """A tfmr model with `hf_model`'s architecture and weights (eval mode, same dtype)."""
    model_type = getattr(hf_model.config, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(f"no tfmr mapping for Hugging Face model_type {model_type!r}; "
                         f"supported: {', '.join(FAMILIES)}")
    family = FAMILIES[model_type]
    cfg = family.config_from_hf(hf_model.config)
    model = build_model(cfg)
    state = family.state_dict_from_hf(hf_model.state_dict(), cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if cfg.tie_embeddings else set()
    if cfg.arch == "encoder-decoder" and cfg.share_embeddings:
        tied.add("src_emb.weight")
    if set(missing) - tied or unexpected:
        raise ValueError(f"weight mapping for {model_type} is incomplete: missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)}")
    dtype = next(hf_model.parameters()).dtype
    return model.to(dtype).eval()
