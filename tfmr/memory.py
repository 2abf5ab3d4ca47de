"""Memory estimate: what a training run will hold, worked out before any tensor is allocated.

    count_parameters(cfg)          the exact parameter count of build_model(cfg), tied matrices once
    estimate(cfg, batch, context)  a MemoryEstimate: parameters, gradients + AdamW moments,
                                   activations, the KV cache the end-of-run sample decodes with
    available(device)              bytes free on the device: MemAvailable of /proc/meminfo on CPU,
                                   the CUDA driver's free memory on a GPU (None where unknown)
    check(estimate, device, max_gb)  ConfigError when the estimate exceeds what is free or the cap
    check_inference(cfg, device)   the same for loading a model to run it (a Hugging Face folder)

How the parameters are counted. The count is exact and needs no formula per variant: the model is
built on PyTorch's `meta` device (shapes only, nothing allocated) with one and with two layers
(and, for an encoder-decoder, with two encoder layers), and every count is linear in the depth:

    count(L, E) = base + L * decoder_block + E * encoder_block

so `base` (embeddings, position tables, final norms, the head; tied matrices once) and the
blocks (attention with its GQA key/value width, the norms, the FFN: GLU's third matrix, every MoE
expert and the router) come from the same builder that makes the real model. A new variant is
counted the day it is registered. A config with a billion layers or a billion positions costs
two shallow skeletons, so absurd sizes are refused in milliseconds instead of hanging in a loop
or dying in the allocator.

The rest of the estimate (bytes; fp32 parameters, gradients and moments as `TrainLoop` keeps them):

    parameters     4 * params + the model's buffers (sinusoid tables and the like)
    optimizer      AdamW: 4 * params of fp32 gradients + 8 * params for its two fp32 moments
                   (trainable parameters only)
    activations    rough, after Korthikanti et al. 2022 (https://arxiv.org/abs/2205.05198, 4.1),
                   without dropout masks. Per layer and token the backward pass keeps, in elements:
                       attention  4 * dim + 2 * kv_dim       norm in/out, q, k, v, the kernel's output
                                  + 2 * heads * T            only if the kernel keeps the weights (eager)
                       (twice for a decoder layer with cross-attention)
                       FFN        2 * dim + ffn / dim        norm in/out, the hidden activations, where
                                                             ffn = the parameters one token meets
                                                             (`FFN.active_parameters`: MoE counts top_k experts)
                   times batch * T tokens and 4 bytes (fp32) or 2 (bf16 autocast), plus the
                   embeddings and final norm (3 * dim) and the logits (vocab * (act + 8) bytes:
                   the logits, their fp32 copy for the loss and its gradient)
    KV cache       keys and values of every layer for one sequence of `context` tokens, as the
                   model's own `new_cache` allocates them (a sliding window keeps its window)

Against the bytes autograd actually saves in a forward pass (`saved_tensors_hooks`), the layer
term is within about 20% for MLP, GLU, MoE and eager-attention models (tests/test_memory.py);
the logits term counts the peak of the loss's backward (logits, log-softmax and gradient alive
together), which is what runs a large-vocabulary model out of memory.

The training total adds all of these (the end-of-run sample decodes while the optimizer state is
still held). It is an estimate: allocator overhead, the CUDA context and temporary buffers of the
kernels are not in it, so it errs low by a few percent on small models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ConfigError, ModelConfig

GB = 1e9


@dataclass
class MemoryEstimate:
    """Bytes a training run will hold (see the module docstring for each term)."""

    params: int  # parameter count
    trainable: int  # parameters the optimizer updates
    parameter_bytes: int  # weights and buffers
    optimizer_bytes: int  # gradients and AdamW's two moments
    activation_bytes: int  # what the backward pass keeps, at `batch` x `tokens`
    kv_cache_bytes: int  # decoding one sequence of the full context
    batch: int
    tokens: int

    @property
    def total(self) -> int:
        return (
            self.parameter_bytes
            + self.optimizer_bytes
            + self.activation_bytes
            + self.kv_cache_bytes
        )

    def summary(self) -> str:
        """One line for the log."""
        return (
            f"memory estimate: {human(self.total)} (parameters {human(self.parameter_bytes)} "
            f"[{self.params:,}], gradients and AdamW moments {human(self.optimizer_bytes)}, "
            f"activations {human(self.activation_bytes)} at batch {self.batch} x {self.tokens} tokens, "
            f"KV cache for sampling {human(self.kv_cache_bytes)})"
        )

    def short(self) -> str:
        """The total and its parts, for an error message."""
        return (
            f"{human(self.total)} (parameters {human(self.parameter_bytes)}, optimizer "
            f"{human(self.optimizer_bytes)}, activations {human(self.activation_bytes)}, "
            f"KV cache {human(self.kv_cache_bytes)})"
        )


def human(n: float) -> str:
    """Bytes in the largest unit that keeps a leading digit: 872 GB, 1.2 GB, 35 MB, 12 kB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{int(n)} B"


# ----------------------------------------------------------------------------- counting on the meta device
@dataclass
class _Measure:
    params: int
    buffer_bytes: int
    kv_bytes: int

    def __sub__(self, other: _Measure) -> _Measure:
        return _Measure(
            *(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other)))
        )

    def __add__(self, other: _Measure) -> _Measure:
        return _Measure(
            *(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other)))
        )

    def __mul__(self, k: int) -> _Measure:
        return _Measure(*(a * k for a in dataclasses.astuple(self)))


def _skeleton(cfg: ModelConfig, layers: int, encoder_layers: int | None):
    """build_model(cfg) at the given depth on the meta device: shapes, no storage."""
    from .builder import build_model

    shallow = dataclasses.replace(cfg, layers=layers, encoder_layers=encoder_layers)
    try:
        with torch.device("meta"):
            return build_model(shallow)
    except RuntimeError as e:  # a shape whose byte size does not fit in 64 bits
        raise ConfigError(
            f"the model is far too large to build (model.dim {cfg.dim}, model.context "
            f"{cfg.context}, model.vocab_size {cfg.vocab_size}): {str(e).splitlines()[0]}"
        ) from None


def _measure(model, arch: str, context: int) -> _Measure:
    params = sum(p.numel() for p in model.parameters())  # a tied matrix is one parameter
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    kv = 0
    if arch != "encoder":  # what decoding one sequence of the full context allocates
        with torch.device("meta"):
            kv = sum(cache.bytes() for cache in model.new_cache(1, context))
    return _Measure(params, buffers, kv)


def _counts(cfg: ModelConfig):
    """(the measure at cfg's depth, a skeleton to read the blocks' shapes from: one layer, or for a
    hybrid stack the pattern's first period of layers)."""
    from .builder import mixer_pattern

    L = cfg.layers
    if cfg.arch == "encoder-decoder":
        E = cfg.encoder_layers or cfg.layers
        one = _skeleton(cfg, 1, 1)
        m11 = _measure(one, cfg.arch, cfg.context)
        dec = _measure(_skeleton(cfg, 2, 1), cfg.arch, cfg.context) - m11
        enc = _measure(_skeleton(cfg, 1, 2), cfg.arch, cfg.context) - m11
        return m11 + dec * (L - 1) + enc * (E - 1), one
    period = min(len(mixer_pattern(cfg)), L)  # a hybrid stack repeats its pattern of mixers
    one = _skeleton(cfg, period, cfg.encoder_layers)
    first = _measure(one, cfg.arch, cfg.context)
    repeats, rest = divmod(L, period)
    total = first
    if repeats > 1:  # one more period measured, then counted repeats - 1 times
        two = _measure(_skeleton(cfg, 2 * period, cfg.encoder_layers), cfg.arch, cfg.context)
        total = first + (two - first) * (repeats - 1)
    if rest:  # the pattern's first `rest` layers once more
        part = _skeleton(cfg, period + rest, cfg.encoder_layers)
        total = total + (_measure(part, cfg.arch, cfg.context) - first)
    return total, one


def _repeats(cfg: ModelConfig, period: int) -> list[int]:
    """How many of cfg's layers are built like layer i of the pattern's first period."""
    repeats, rest = divmod(cfg.layers, period)
    return [repeats + (i < rest) for i in range(period)]


def count_parameters(cfg: ModelConfig) -> int:
    """The number of parameters build_model(cfg) will have (`sum(p.numel() for p in
    model.parameters())`, a tied matrix once), without allocating it (ConfigError if cfg is invalid)."""
    return _counts(cfg)[0].params


def estimate(
    cfg: ModelConfig,
    batch: int,
    tokens: int | None = None,
    precision: str = "fp32",
    trainable: int | None = None,
) -> MemoryEstimate:
    """The memory a training run of `cfg` at micro-batch `batch` x `tokens` (default: the
    context) will hold; `precision` "fp32" or "bf16" (autocast) sizes the activations; `trainable`
    the parameters the optimizer holds state for (default: all)."""
    total, one = _counts(cfg)
    T = cfg.context if tokens is None else tokens
    act = 2 if precision == "bf16" else 4
    block = one.blocks[0]
    per_attention = block.attn.activation_floats(T)  # the mixer's own count (attention, retention)
    per_ffn = 2 * cfg.dim + block.ffn.active_parameters() // cfg.dim
    decoder_layer = per_attention * len(block.attentions()) + per_ffn
    layers = cfg.layers * decoder_layer
    if len(one.blocks) > 1:  # a hybrid stack: each layer's own mixer, its pattern repeated
        layers = sum(
            n * (b.attn.activation_floats(T) * len(b.attentions()) + per_ffn)
            for b, n in zip(one.blocks, _repeats(cfg, len(one.blocks)))
        )
    if cfg.arch == "encoder-decoder":
        encoder_block = one.encoder[0]
        layers += (cfg.encoder_layers or cfg.layers) * (
            per_attention * len(encoder_block.attentions()) + per_ffn
        )
    tokens_in_batch = batch * T
    activations = tokens_in_batch * ((layers + 3 * cfg.dim) * act + cfg.vocab_size * (act + 8))
    trainable = total.params if trainable is None else trainable
    return MemoryEstimate(
        params=total.params,
        trainable=trainable,
        parameter_bytes=4 * total.params + total.buffer_bytes,
        optimizer_bytes=12 * trainable,
        activation_bytes=activations,
        kv_cache_bytes=total.kv_bytes,
        batch=batch,
        tokens=T,
    )


# ----------------------------------------------------------------------------- what the machine has
def available(device: torch.device | str) -> tuple[int | None, str]:
    """(bytes free on `device`, where that figure comes from); (None, "") where it is unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
        except (OSError, ValueError, IndexError):
            pass
    return None, ""


def check(est: MemoryEstimate, device: torch.device | str, max_gb: float = 0.0) -> None:
    """Refuse (ConfigError) a run whose estimate exceeds `max_gb` (train.max_memory; 0: no cap)
    or the memory free on `device`."""
    advice = (
        "make the model or the batch smaller (model.dim, model.layers, model.context, train.batch_size; "
        "train.grad_accum keeps the effective batch)"
    )
    if max_gb > 0 and est.total > max_gb * GB:
        raise ConfigError(
            f"memory estimate {est.short()} exceeds train.max_memory={max_gb:g} GB; {advice}"
        )
    free, where = available(device)
    if free is not None and est.total > free:
        raise ConfigError(
            f"memory estimate {est.short()} exceeds the {human(free)} available on "
            f"{torch.device(device).type} ({where}); {advice}"
        )


def check_inference(cfg: ModelConfig, device: torch.device | str = "cpu") -> None:
    """Refuse (ConfigError) loading a model whose fp32 weights and buffers alone exceed the memory
    free on `device`: a config.json claiming `n_embd: 1000000000` is one line, not an allocator
    traceback (`generate`, `convert`, `explore` and `finetune` read Hugging Face folders this way)."""
    total, _ = _counts(cfg)
    need = 4 * total.params + total.buffer_bytes
    free, where = available(device)
    if free is not None and need > free:
        raise ConfigError(
            f"the model needs {human(need)} for its weights ({total.params:,} parameters), more than "
            f"the {human(free)} available on {torch.device(device).type} ({where}); its config "
            f"(model.dim {cfg.dim}, model.layers {cfg.layers}) may be wrong"
        )
