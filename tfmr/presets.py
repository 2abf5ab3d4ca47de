"""Presets: plain functions returning a RunConfig. `PRESETS` maps names to them.

    default                    the `make run` job: a char-level LM on the embedded corpus, CPU-sized
    tiny                       seconds-long runs for tests and smoke checks
    nanogpt-shakespeare-char   exactly nanoGPT's CPU recipe shape, for side-by-side benchmarks
    gpt2-124m                  the GPT-2 small shape (12 x 768, context 1024), for GPU benchmarks
"""
from __future__ import annotations

from .config import Choice, ConfigError, DataConfig, ModelConfig, RunConfig, SampleConfig, TrainConfig


def default() -> RunConfig:
    """The `make run` job: a char-level LM on the embedded corpus, a few minutes on 2 CPU cores."""
    return RunConfig(
        model=ModelConfig(dim=192, layers=4, heads=6, context=128, dropout=0.0),
        data=DataConfig(tokenizer=Choice("char")),
        train=TrainConfig(steps=1000, batch_size=16, lr=2e-3, min_lr=2e-4, warmup=100,
                          eval_every=250, eval_iters=10, checkpoint_every=250),
        sample=SampleConfig(prompt="The ", max_new_tokens=300, temperature=0.8, top_k=40, num_samples=2),
    )


def tiny() -> RunConfig:
    """Seconds-long runs for tests and smoke checks (fp32 everywhere, so results match across CPUs)."""
    return RunConfig(
        model=ModelConfig(dim=32, layers=2, heads=2, context=32),
        train=TrainConfig(steps=50, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=5, eval_every=25,
                          eval_iters=2, log_every=5, checkpoint_every=25, dtype="float32"),
        sample=SampleConfig(prompt="The ", max_new_tokens=40, num_samples=1),
    )


def nanogpt_shakespeare_char() -> RunConfig:
    """nanoGPT's `train_shakespeare_char` run at its CPU recipe size (see ../shared/ANCHORS.md)."""
    return RunConfig(
        model=ModelConfig(dim=128, layers=4, heads=4, context=64, dropout=0.0, bias=False),
        data=DataConfig(tokenizer=Choice("char"), val_fraction=0.1),
        train=TrainConfig(steps=2000, batch_size=12, lr=1e-3, min_lr=1e-4, warmup=100, beta2=0.99,
                          weight_decay=0.1, grad_clip=1.0, eval_every=250, eval_iters=20, log_every=10,
                          checkpoint_every=1000),
        sample=SampleConfig(prompt="\n", max_new_tokens=300),
    )


def gpt2_124m() -> RunConfig:
    """The GPT-2 small shape (12 x 768, context 1024, vocab 50304), for GPU benchmarks."""
    return RunConfig(
        model=ModelConfig(vocab_size=50304, dim=768, layers=12, heads=12, context=1024, bias=True),
        train=TrainConfig(steps=5000, batch_size=12, lr=6e-4, min_lr=6e-5, warmup=200, beta2=0.95),
    )


PRESETS = {
    "default": default,
    "tiny": tiny,
    "nanogpt-shakespeare-char": nanogpt_shakespeare_char,
    "gpt2-124m": gpt2_124m,
}


def get(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]()
