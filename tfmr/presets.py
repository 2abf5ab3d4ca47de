"""Presets: plain functions returning a config, one registry of them, and the one config resolver.

    PRESETS                    every preset name -> (the command that uses it, its function)
    KINDS                      every run config class -> (its kind, the commands that read it)
    register(cls, ...)         what a task adds to both: its config class and its presets
    get(name, cls)             a fresh config from a preset, checked to be a `cls` (RunConfig, ...)
    describe(name)             its description: the docstring's first paragraph, on one line
    read_run_config(dir, cls)  a checkpoint's saved config; another command's checkpoint is named as such
    resolve(...)               preset (or a run's saved config) -> YAML/TOML file -> --data -> each --set

The presets, by the command that uses them (`tfmr presets` lists them, `-v` with their configs):

    train        default, tiny, nanogpt-shakespeare-char, gpt2-124m,          RunConfig
                 llama-124m
    experiment   exp-length-extrapolation, exp-norm-depth, exp-moe,           RunConfig (the base; each
                 exp-long-context, exp-streaming, exp-mixers                  experiment varies one axis)

and those a task adds when it is imported (`register`; the `tfmr` command imports every task):

    g2p          g2p-tiny, g2p-small, g2p-base, g2p-long                      G2PConfig (tasks/g2p_presets.py)
    experiment   exp-g2p-sampling, exp-g2p-guided, exp-g2p-alignment,         G2PConfig (g2p experiments)
                 exp-g2p-scaling
    copytask     copytask, copytask-tiny                                      CopyTaskConfig (tasks/copytask.py)

A command takes any preset whose config has its class: `tfmr lm train --preset exp-moe` trains the
MoE experiment's base model, `tfmr lm train --preset g2p-tiny` is refused with the valid names.
A task's config class and presets live with the task; the library never imports a task, so the
task adds them to these registries itself.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import (
    Choice,
    ConfigError,
    DataConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    apply_override,
    from_dict,
    load_file,
    merge_into,
    set_field,
)
from .errors import CheckpointError


# ----------------------------------------------------------------------------- language models (tfmr lm train)
def default() -> RunConfig:
    """The `make lm` job: a char-level LM on the embedded corpus, a few minutes on 2 CPU cores."""
    return RunConfig(
        model=ModelConfig(dim=192, layers=4, heads=6, context=128, dropout=0.0),
        data=DataConfig(tokenizer=Choice("char")),
        train=TrainConfig(
            steps=1000,
            batch_size=16,
            lr=2e-3,
            min_lr=2e-4,
            warmup=100,
            eval_every=250,
            eval_iters=10,
            checkpoint_every=250,
        ),
        sample=SampleConfig(
            prompt="The ", max_new_tokens=300, temperature=0.8, top_k=40, num_samples=2
        ),
    )


def tiny() -> RunConfig:
    """Seconds-long runs for tests and smoke checks (fp32 everywhere, so results match across CPUs)."""
    return RunConfig(
        model=ModelConfig(dim=32, layers=2, heads=2, context=32),
        train=TrainConfig(
            steps=50,
            batch_size=8,
            lr=3e-3,
            min_lr=3e-4,
            warmup=5,
            eval_every=25,
            eval_iters=2,
            log_every=5,
            checkpoint_every=25,
            dtype="float32",
        ),
        sample=SampleConfig(prompt="The ", max_new_tokens=40, num_samples=1),
    )


def nanogpt_shakespeare_char() -> RunConfig:
    """nanoGPT's `train_shakespeare_char` run at its CPU recipe size, for side-by-side benchmarks."""
    return RunConfig(
        model=ModelConfig(dim=128, layers=4, heads=4, context=64, dropout=0.0, bias=False),
        data=DataConfig(tokenizer=Choice("char"), val_fraction=0.1),
        train=TrainConfig(
            steps=2000,
            batch_size=12,
            lr=1e-3,
            min_lr=1e-4,
            warmup=100,
            beta2=0.99,
            weight_decay=0.1,
            grad_clip=1.0,
            eval_every=250,
            eval_iters=20,
            log_every=10,
            checkpoint_every=1000,
        ),
        sample=SampleConfig(prompt="\n", max_new_tokens=300),
    )


def gpt2_124m() -> RunConfig:
    """The GPT-2 small shape (12 x 768, context 1024, vocab 50304), for GPU benchmarks and
    multi-GPU runs (docs/distributed.md)."""
    return RunConfig(
        model=ModelConfig(vocab_size=50304, dim=768, layers=12, heads=12, context=1024, bias=True),
        train=TrainConfig(steps=5000, batch_size=12, lr=6e-4, min_lr=6e-5, warmup=200, beta2=0.95),
    )


def llama_124m() -> RunConfig:
    """A Llama-architecture model of GPT-2 small's size: 12 layers, dim 768, 12 heads with 4 KV
    heads (GQA), SwiGLU hidden 2048, RoPE, RMSNorm, no biases, tied embeddings, vocab 50304."""
    return RunConfig(
        model=ModelConfig(
            vocab_size=50304,
            dim=768,
            layers=12,
            heads=12,
            kv_heads=4,
            context=1024,
            bias=False,
            pos=Choice("rope", base=10000.0),
            norm=Choice("rmsnorm"),
            ffn=Choice("swiglu", hidden=2048),
        ),
        train=TrainConfig(steps=5000, batch_size=12, lr=6e-4, min_lr=6e-5, warmup=200, beta2=0.95),
    )


# ----------------------------------------------------------------------------- experiments (tfmr experiment)
def exp_length_extrapolation() -> RunConfig:
    """Length extrapolation: char LM, 2 x 128, trained at context 64 for 600 steps (model.pos varies)."""
    return RunConfig(
        model=ModelConfig(
            dim=128, layers=2, heads=4, context=64, kernel=Choice("sdpa"), dropout=0.0
        ),
        data=DataConfig(tokenizer=Choice("char")),  # cache: the experiment's OUT/data unless set
        train=TrainConfig(
            steps=600,
            batch_size=32,
            lr=2e-3,
            min_lr=2e-4,
            warmup=50,
            eval_every=600,
            eval_iters=5,
            log_every=50,
            checkpoint_every=600,
            seed=1337,
            device="cpu",
            dtype="float32",
            threads=0,
        ),
    )


def exp_norm_depth() -> RunConfig:
    """Norm placement vs depth: char LM, 24 layers x dim 64, 300 steps at lr 2e-3 (model.residual varies)."""
    cfg = default()
    m, t = cfg.model, cfg.train
    m.dim, m.layers, m.heads, m.context, m.dropout = 64, 24, 4, 64, 0.0
    t.steps, t.batch_size, t.lr, t.min_lr, t.warmup = 300, 16, 2e-3, 2e-4, 30
    t.eval_every, t.eval_iters, t.log_every = 60, 10, 10
    t.checkpoint_every, t.seed, t.threads, t.dtype = 300, 1337, 1, "float32"
    return cfg


def exp_moe() -> RunConfig:
    """MoE vs dense: char LM, 4 layers x dim 128, 400 steps (model.ffn varies)."""
    cfg = default()
    m, t = cfg.model, cfg.train
    m.dim, m.layers, m.heads, m.context, m.dropout = 128, 4, 4, 64, 0.0
    t.steps, t.batch_size, t.lr, t.min_lr, t.warmup = 400, 16, 2e-3, 2e-4, 40
    t.eval_every, t.eval_iters, t.log_every = 80, 10, 10
    t.checkpoint_every, t.seed, t.threads, t.dtype = 400, 1337, 1, "float32"
    return cfg


def exp_long_context() -> RunConfig:
    """Loss by position to 16L: char LM, 2 x 128, RoPE, trained at L = 64 for 600 steps (what varies:
    full / sliding / sinks attention, Transformer-XL memory, retention)."""
    cfg = exp_length_extrapolation()
    cfg.model.pos = Choice("rope")
    return cfg


def exp_streaming() -> RunConfig:
    """Streaming generation: a 4 x 128 RoPE model (untrained: memory and speed only), context 256."""
    return RunConfig(
        model=ModelConfig(
            dim=128, layers=4, heads=4, context=256, pos=Choice("rope"), kernel=Choice("sdpa")
        ),
        train=TrainConfig(seed=1337, device="cpu", dtype="float32"),
    )


def exp_mixers() -> RunConfig:
    """Transformer vs retention vs hybrid: char LM, 6 x 128, RoPE, context 128, 5 minutes each
    (the experiment's --minutes); evaluation every 100 steps."""
    return RunConfig(
        model=ModelConfig(
            dim=128, layers=6, heads=4, context=128, pos=Choice("rope"), kernel=Choice("sdpa")
        ),
        data=DataConfig(tokenizer=Choice("char")),
        train=TrainConfig(
            steps=100000,
            batch_size=16,
            lr=2e-3,
            min_lr=2e-4,
            warmup=50,
            eval_every=100,
            eval_iters=5,
            log_every=50,
            checkpoint_every=100000,
            seed=1337,
            device="cpu",
            dtype="float32",
        ),
    )


# ----------------------------------------------------------------------------- the registry
# name -> (the command that uses it, the function). `tfmr presets` lists them in this order: the
# library's own here, then each task's as the task adds them (`register`).
PRESETS: dict[str, tuple[str, Callable]] = {
    "default": ("lm train", default),
    "tiny": ("lm train", tiny),
    "nanogpt-shakespeare-char": ("lm train", nanogpt_shakespeare_char),
    "gpt2-124m": ("lm train", gpt2_124m),
    "llama-124m": ("lm train", llama_124m),
    "exp-length-extrapolation": ("experiment length-extrapolation", exp_length_extrapolation),
    "exp-norm-depth": ("experiment norm-depth", exp_norm_depth),
    "exp-moe": ("experiment moe", exp_moe),
    "exp-long-context": ("experiment long-context", exp_long_context),
    "exp-streaming": ("experiment streaming", exp_streaming),
    "exp-mixers": ("experiment mixers", exp_mixers),
}


def describe(name: str) -> str:
    """Preset `name`'s description, on one line: its function's docstring's first paragraph. The one
    source of what `tfmr presets` prints and the docs' preset tables quote (a test checks them)."""
    doc = inspect.getdoc(PRESETS[name][1]) or ""
    return " ".join(doc.split("\n\n")[0].split())


def names(cls: type = RunConfig) -> list[str]:
    """The presets whose config is a `cls`, in registry order."""
    return [name for name, (_, fn) in PRESETS.items() if isinstance(fn(), cls)]


def get(name: str, cls: type = RunConfig):
    """A fresh config from preset `name`; ConfigError, listing the valid names, if there is none
    or if it makes another kind of config (a G2P preset for `tfmr lm train`, say)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(names(cls))}")
    command, fn = PRESETS[name]
    cfg = fn()
    if not isinstance(cfg, cls):
        raise ConfigError(
            f"preset {name!r} is a {type(cfg).__name__} for `tfmr {command}`; valid presets "
            f"here: {', '.join(names(cls))}"
        )
    return cfg


# What each config class is (its kind, the commands that read it), for messages about a checkpoint
# given to the wrong command and for tfmr.load's reading of a checkpoint; a task adds its own.
KINDS: dict[type, tuple[str, str]] = {RunConfig: ("language-model", "tfmr lm train, generate")}


def register(cls: type, kind: str, commands: str, presets: dict[str, tuple[str, Callable]]) -> None:
    """What a task adds to the registries: its config class `cls` (a `kind` of checkpoint, read by
    `commands`) and its presets (name -> (command, function)). A task module calls this once, at
    its end; a name taken by another preset is a mistake in the code (ValueError)."""
    taken = sorted(set(presets) & set(PRESETS))
    if taken:
        raise ValueError(f"preset names already registered: {', '.join(taken)}")
    KINDS[cls] = (kind, commands)
    PRESETS.update(presets)


def fits(cls: type, data: dict) -> bool:
    """Whether saved config `data` has sections of `cls` only, its model among them, and reads as
    one (a section added later, such as a language model's `decode`, may be missing)."""
    if (
        not isinstance(data, dict)
        or "model" not in data
        or not set(data) <= {f.name for f in dataclasses.fields(cls)}
    ):
        return False
    try:
        from_dict(cls, data)
    except ConfigError:
        return False
    return True


def kinds_of(data: dict, but: type | None = None) -> list[type]:
    """The registered config classes (KINDS, less `but`) saved config `data` reads as: those with
    exactly its sections, else those it fits with some missing. A checkpoint does not say which
    command wrote it, so tasks with the same sections (the copy task's and any pair task's that adds
    none) all read it."""
    fitting = [cls for cls in KINDS if cls is not but and fits(cls, data)]
    exact = [cls for cls in fitting if set(data) == {f.name for f in dataclasses.fields(cls)}]
    return exact or fitting


def read_run_config(directory: str | Path, cls: type = RunConfig):
    """The config saved in checkpoint `directory`, as a `cls`. A checkpoint written by another
    command (a G2P checkpoint given to `tfmr lm generate`, say) is refused with a CheckpointError
    that names its kind and the command that reads it, instead of an unknown-key error."""
    from .checkpoint import read_config  # torch: only a command that reads a checkpoint pays it

    data = read_config(directory)
    try:
        return from_dict(cls, data)
    except ConfigError:
        others = kinds_of(data, but=cls)
        if not others:
            raise
        kinds = " or ".join(dict.fromkeys(KINDS[other][0] for other in others))
        commands = "; ".join(KINDS[other][1] for other in others)
        mine = KINDS.get(cls, (cls.__name__, ""))[0]
        raise CheckpointError(
            f"{directory} is a {kinds} checkpoint ({commands}); this command reads {mine} checkpoints"
        ) from None


def resolve(
    preset: str | None,
    config_file: str | Path | None = None,
    data: str | None = None,
    overrides: Sequence[str] = (),
    *,
    cls: type = RunConfig,
    saved: str | Path | None = None,
):
    """The one config resolver, for every command:

    preset `preset` (a `cls`), or with `saved` the config saved in that checkpoint folder
    -> the YAML / TOML / JSON file `config_file`, key by key
    -> `data`: the --data shortcut for data.path
    -> each key=value of `overrides` (--set), in order
    """
    if saved is not None:
        cfg = read_run_config(saved, cls)
    else:
        cfg = get(preset or "default", cls)
    if config_file:
        merge_into(cfg, load_file(config_file))
    if data:
        set_field(cfg.data, "path", str(data), "data")
    for assignment in overrides:
        apply_override(cfg, assignment)
    return cfg
