"""tfmr: every concept of the Transformer, real and fast, in one readable PyTorch codebase.

    from tfmr import ModelConfig, Choice, build_model
    model = build_model(ModelConfig(vocab_size=100, pos=Choice("sinusoidal")))
    out = model(ids, targets)          # Output(logits, loss, aux_loss, attentions, hidden)
    model, tokenizer, _ = tfmr.from_pretrained("hf-folder")   # a Hugging Face folder, no transformers
    loaded = tfmr.load("runs/g2p")     # any saved model: a run, a checkpoint, an export, a HF folder

The README's concept map says which module holds each concept and which test checks it.
"""

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
__version__ = "0.1.0"
