"""tfmr: every concept of the Transformer, real and fast, in one readable PyTorch codebase.

    from tfmr import ModelConfig, Choice, build_model
    model = build_model(ModelConfig(vocab_size=100, pos=Choice("sinusoidal")))
    out = model(ids, targets)          # Output(logits, loss, aux_loss, attentions, hidden)
    model, tokenizer, _ = tfmr.from_pretrained("hf-folder")   # a Hugging Face folder, no transformers
    loaded = tfmr.load("runs/g2p")     # any saved model: a run, a checkpoint, an export, a HF folder

The README's concept map says which module holds each concept and which test checks it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers and editors see; at run time, __getattr__ below
    from .builder import build_model
    from .config import (
        Choice,
        ConfigError,
        DataConfig,
        ModelConfig,
        RunConfig,
        SampleConfig,
        TrainConfig,
    )
    from .interop import from_pretrained
    from .loading import LoadedModel, load
    from .model import Model, Output

__version__ = "0.1.0"

# name -> the module that holds it. Read on first use (PEP 562), so that `import tfmr`, and with it
# the command line's parser, `tfmr --help` and `tfmr presets`, loads no torch; `from tfmr import
# build_model` imports tfmr.builder (and torch) then.
_HOMES = {
    "build_model": "builder",
    "Choice": "config",
    "ConfigError": "config",
    "DataConfig": "config",
    "ModelConfig": "config",
    "RunConfig": "config",
    "SampleConfig": "config",
    "TrainConfig": "config",
    "Model": "model",
    "Output": "model",
    "from_pretrained": "interop",
    "load": "loading",
    "LoadedModel": "loading",
}

__all__ = [
    "build_model",
    "Choice",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "Model",
    "Output",
    "from_pretrained",
    "load",
    "LoadedModel",
]


def __getattr__(name: str):
    """tfmr.NAME for the names of __all__, imported from their module on first use and kept."""
    if name not in _HOMES:
        raise AttributeError(f"module 'tfmr' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
