"""Interop: load Hugging Face models into tfmr with the same weights and the same logits.

    from tfmr.interop import from_hf, from_pretrained
    model = from_hf(hf_model)                         # a transformers PreTrainedModel instance
    model, tokenizer, model_type = from_pretrained(folder)   # a saved folder, no transformers needed

Foreign names are mapped here, at the boundary; tfmr's own modules keep tfmr's names. Each family
has one module with `config_from_hf(hf_config) -> ModelConfig`, `state_dict_from_hf(hf_state_dict,
cfg) -> dict` for tfmr's parameter names, and `HF_DEFAULTS` (transformers' defaults for keys a
config.json leaves out). The config is read by attribute, so a transformers config object and a
config.json (hf_folder.py) both work. `transformers` is only needed by the caller of `from_hf`
(it is a test extra), never imported here. `torchscale.py` loads microsoft/torchscale's RetNet
retention layer (`load_retention`) the same way.
"""

from __future__ import annotations

import torch

from .hf_folder import FAMILIES, Loaded, family, from_pretrained, is_hf_folder, model_from_hf_state  # noqa: F401

__all__ = ["FAMILIES", "Loaded", "from_hf", "from_pretrained", "is_hf_folder"]


def from_hf(hf_model) -> torch.nn.Module:
    """A tfmr model with `hf_model`'s architecture and weights (eval mode, same dtype)."""
    model_type = getattr(hf_model.config, "model_type", None)
    family(model_type)  # an unmapped family is refused before its weights are touched
    model = model_from_hf_state(
        model_type, hf_model.config, hf_model.state_dict(), where=f"{model_type} model"
    )
    dtype = next(hf_model.parameters()).dtype
    return model.to(dtype).eval()
