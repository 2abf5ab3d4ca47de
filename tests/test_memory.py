"""The memory estimate (tfmr/memory.py): an exact parameter count without building the model,
the estimate's terms, and runs refused before anything is allocated."""

from __future__ import annotations

import pytest
import torch

from tfmr import memory
from tfmr.builder import build_model
from tfmr.config import Choice, ConfigError, ModelConfig
from tfmr.ffn import FFNS
from tfmr.kernels import KERNELS
from tfmr.model import RESIDUALS
from tfmr.norms import NORMS
from tfmr.patterns import PATTERNS
from tfmr.positions import POSITIONS
from tfmr.train import Trainer

CONFIGS = {
    "decoder": ModelConfig(vocab_size=50, dim=32, layers=3, heads=4, context=16),
    "untied": ModelConfig(
        vocab_size=50, dim=32, layers=2, heads=4, context=16, tie_embeddings=False
    ),
    "gqa": ModelConfig(vocab_size=50, dim=32, layers=3, heads=4, kv_heads=2, context=16),
    "mqa-no-bias-rms": ModelConfig(
        vocab_size=50,
        dim=32,
        layers=2,
        heads=4,
        kv_heads=1,
        bias=False,
        norm=Choice("rmsnorm"),
        context=16,
    ),
    "swiglu-rope": ModelConfig(
        vocab_size=50,
        dim=32,
        layers=3,
        heads=4,
        ffn=Choice("swiglu"),
        pos=Choice("rope"),
        context=16,
    ),
    "glu-hidden": ModelConfig(
        vocab_size=50, dim=32, layers=2, heads=4, ffn=Choice("glu", hidden=40), context=16
    ),
    "moe": ModelConfig(
        vocab_size=50, dim=32, layers=3, heads=4, ffn=Choice("moe", experts=4, top_k=2), context=16
    ),
    "moe-glu-experts": ModelConfig(
        vocab_size=50,
        dim=32,
        layers=2,
        heads=4,
        ffn=Choice("moe", experts=3, top_k=1, expert="glu"),
        context=16,
    ),
    "post-norm": ModelConfig(
        vocab_size=50, dim=32, layers=3, heads=4, residual=Choice("post"), context=16
    ),
    "deepnorm-sinusoidal": ModelConfig(
        vocab_size=50,
        dim=32,
        layers=4,
        heads=4,
        residual=Choice("deepnorm"),
        pos=Choice("sinusoidal"),
        context=16,
    ),
    "encoder-mlm": ModelConfig(
        arch="encoder",
        vocab_size=50,
        dim=32,
        layers=3,
        heads=4,
        head=Choice("mlm"),
        type_vocab_size=2,
        embed_norm=True,
        context=16,
    ),
    "encoder-decoder": ModelConfig(
        arch="encoder-decoder",
        vocab_size=50,
        dim=32,
        layers=3,
        encoder_layers=2,
        heads=4,
        context=16,
    ),
    "encoder-decoder-unshared": ModelConfig(
        arch="encoder-decoder",
        vocab_size=50,
        src_vocab_size=30,
        dim=32,
        layers=2,
        encoder_layers=4,
        heads=4,
        share_embeddings=False,
        tie_embeddings=False,
        context=16,
    ),
    "encoder-decoder-gqa-moe": ModelConfig(
        arch="encoder-decoder",
        vocab_size=50,
        dim=32,
        layers=2,
        heads=4,
        kv_heads=2,
        ffn=Choice("moe", experts=2, top_k=1),
        context=16,
    ),
}


def _built(cfg: ModelConfig) -> int:
    return sum(p.numel() for p in build_model(cfg).parameters())


@pytest.mark.parametrize("name", CONFIGS)
def test_the_parameter_count_equals_the_built_model(name):
    cfg = CONFIGS[name]
    assert memory.count_parameters(cfg) == _built(cfg)


@pytest.mark.parametrize("kind", FFNS)
def test_every_ffn_kind_is_counted_exactly(kind):
    cfg = ModelConfig(vocab_size=40, dim=24, layers=3, heads=2, context=8, ffn=Choice(kind))
    assert memory.count_parameters(cfg) == _built(cfg)


@pytest.mark.parametrize("kind", POSITIONS)
def test_every_position_scheme_is_counted_exactly(kind):
    for arch in ("decoder", "encoder-decoder"):
        cfg = ModelConfig(
            arch=arch, vocab_size=40, dim=24, layers=2, heads=2, context=8, pos=Choice(kind)
        )
        assert memory.count_parameters(cfg) == _built(cfg), arch


@pytest.mark.parametrize(
    "axis,kind",
    [("kernel", k) for k in KERNELS]
    + [("attention_pattern", k) for k in PATTERNS]
    + [("norm", k) for k in NORMS]
    + [("residual", k) for k in RESIDUALS],
)
def test_every_kernel_pattern_norm_and_residual_is_counted_exactly(axis, kind):
    cfg = ModelConfig(
        vocab_size=40, dim=24, layers=3, heads=2, context=8, pos=Choice("rope")
    )  # sinks: relative
    setattr(cfg, axis, Choice(kind))
    assert memory.count_parameters(cfg) == _built(cfg)
    assert memory.estimate(cfg, batch=2).kv_cache_bytes > 0


def test_the_estimate_adds_up():
    cfg = CONFIGS["gqa"]
    est = memory.estimate(cfg, batch=4, tokens=16)
    n = _built(cfg)
    assert est.params == n and est.trainable == n
    assert est.parameter_bytes == 4 * n  # no buffers in this model
    assert est.optimizer_bytes == 12 * n  # fp32 gradients + AdamW's two fp32 moments
    kv = (
        2 * cfg.layers * 2 * (cfg.dim // cfg.heads) * cfg.context * 4
    )  # k and v, 2 kv heads, fp32, one sequence
    assert est.kv_cache_bytes == kv
    assert (
        est.total
        == est.parameter_bytes + est.optimizer_bytes + est.activation_bytes + est.kv_cache_bytes
    )
    bf16 = memory.estimate(cfg, batch=4, tokens=16, precision="bf16")
    assert bf16.activation_bytes < est.activation_bytes
    assert memory.estimate(cfg, batch=8, tokens=16).activation_bytes == 2 * est.activation_bytes
    assert memory.estimate(cfg, batch=4, tokens=16, trainable=0).optimizer_bytes == 0
    assert "memory estimate: " in est.summary() and f"[{n:,}]" in est.summary()


def test_absurd_sizes_are_estimated_without_building_them():
    huge = memory.estimate(
        ModelConfig(layers=10**8), batch=1, tokens=8
    )  # a loop of 1e8 blocks if built
    assert huge.params > 10**12
    long = memory.estimate(ModelConfig(context=10**9, pos=Choice("rope")), batch=1, tokens=8)
    assert long.kv_cache_bytes > 10**12  # the sample's KV cache at the full context
    with pytest.raises(ConfigError, match="far too large"):
        memory.count_parameters(ModelConfig(dim=10**9, heads=1))
    with pytest.raises(
        ConfigError, match="model.dim"
    ):  # invalid configs are refused as by the builder
        memory.count_parameters(ModelConfig(dim=30, heads=4))


@pytest.mark.parametrize("layers", [1, 2, 3, 4, 5, 7])
def test_a_hybrid_stack_is_counted_from_its_pattern_exactly(layers):
    """A pattern of 3 mixers over 1-7 layers (shorter than, equal to, and a whole or partial
    multiple of the pattern): the count, the KV cache and the activations equal the built model's
    layer by layer, though only the pattern's periods are built."""
    cfg = ModelConfig(
        vocab_size=40,
        dim=24,
        layers=layers,
        heads=2,
        context=8,
        mixer=Choice("retention"),
        mixer_pattern="retention,attention,attention",
    )
    built = build_model(cfg)
    assert memory.count_parameters(cfg) == sum(p.numel() for p in built.parameters())
    est = memory.estimate(cfg, batch=2, tokens=8)
    assert est.kv_cache_bytes == sum(c.bytes() for c in built.new_cache(1, cfg.context))
    per_ffn = 2 * cfg.dim + built.blocks[0].ffn.active_parameters() // cfg.dim
    floats = sum(b.attn.activation_floats(8) * len(b.attentions()) + per_ffn for b in built.blocks)
    act = 2 * 8 * ((floats + 3 * cfg.dim) * 4 + cfg.vocab_size * (4 + 8))
    assert est.activation_bytes == act


def test_a_deep_hybrid_stack_is_estimated_without_building_it():
    cfg = ModelConfig(layers=10**8, mixer=Choice("retention"), mixer_pattern="retention,attention")
    huge = memory.estimate(cfg, batch=1, tokens=8)  # a loop of 1e8 blocks if built
    assert huge.params > 10**12 and huge.kv_cache_bytes > 0


def test_available_memory_is_read_from_proc_meminfo():
    free, where = memory.available(torch.device("cpu"))
    assert free > 0 and "MemAvailable" in where


def _quiet(cfg, out, **kw):
    return Trainer(cfg, out, progress=False, log=lambda *a: None, **kw)


def test_a_run_over_max_memory_is_refused_with_the_estimate(tiny_cfg, tmp_path):
    tiny_cfg.train.max_memory = 0.0001  # 100 kB
    with pytest.raises(
        ConfigError,
        match=r"memory estimate .* \(parameters .*\) exceeds train.max_memory=0.0001 GB",
    ):
        _quiet(tiny_cfg, tmp_path / "run")
    tiny_cfg.train.max_memory = -1.0
    with pytest.raises(ConfigError, match="train.max_memory must be 0"):
        _quiet(tiny_cfg, tmp_path / "run2")


def test_a_run_larger_than_the_free_memory_is_refused(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available", lambda device: (10_000, "a test's tiny machine"))
    with pytest.raises(
        ConfigError, match=r"exceeds the 10 kB available on cpu \(a test's tiny machine\)"
    ):
        _quiet(tiny_cfg, tmp_path / "run")


def test_the_estimate_is_logged_before_the_model_is_built(tiny_cfg, tmp_path):
    said = []
    trainer = Trainer(tiny_cfg, tmp_path / "run", progress=False, log=said.append)
    line = next(s for s in said if s.startswith("memory estimate: "))
    assert f"[{sum(p.numel() for p in trainer.model.parameters()):,}]" in line
    assert f"at batch {tiny_cfg.train.batch_size} x {trainer.batches.context} tokens" in line


def _saved_bytes(cfg: ModelConfig, batch: int, tokens: int) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward (weights aside)."""
    model = build_model(cfg)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = torch.randint(0, cfg.vocab_size, (batch, tokens))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, x)
    return sum(n for ptr, n in saved.items() if ptr not in weights)


@pytest.mark.parametrize(
    "ffn,kernel",
    [
        ("mlp", "sdpa"),
        ("swiglu", "sdpa"),
        ("mlp", "eager"),
        (Choice("moe", experts=4, top_k=2), "sdpa"),
    ],
)
def test_the_activation_term_is_close_to_what_autograd_saves(ffn, kernel):
    cfg = ModelConfig(
        vocab_size=40,
        dim=64,
        layers=2,
        heads=4,
        kv_heads=2,
        context=32,
        ffn=Choice(ffn) if isinstance(ffn, str) else ffn,
        kernel=Choice(kernel),
    )
    est = memory.estimate(cfg, batch=4, tokens=32)
    logits_peak = (
        4 * 32 * cfg.vocab_size * 8
    )  # the estimate's extra logits copies at the backward's peak
    ratio = (est.activation_bytes - logits_peak) / _saved_bytes(cfg, 4, 32)
    assert 0.7 < ratio < 1.4, ratio
