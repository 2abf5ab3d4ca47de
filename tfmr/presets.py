"""Presets: plain functions returning a config, one registry of them, and the one config resolver.

    PRESETS                    every preset name -> (the command that uses it, its function)
    get(name, cls)             a fresh config from a preset, checked to be a `cls` (RunConfig, ...)
    read_run_config(dir, cls)  a checkpoint's saved config; another command's checkpoint is named as such
    resolve(...)               preset (or a run's saved config) -> YAML/TOML file -> --data -> each --set

The presets, by the command that uses them (`tfmr presets` lists them, `-v` with their configs):

    train        default, tiny, nanogpt-shakespeare-char, gpt2-124m,          RunConfig
                 llama-124m
    experiment   exp-length-extrapolation, exp-norm-depth, exp-moe,           RunConfig (the base; each
                 exp-long-context, exp-streaming, exp-mixers                  experiment varies one axis)
    g2p          g2p-tiny, g2p-small, g2p-base, g2p-long                      G2PConfig
    experiment   exp-g2p-sampling, exp-g2p-guided, exp-g2p-alignment,         G2PConfig (g2p experiments)
                 exp-g2p-scaling
    copytask     copytask, copytask-tiny                                      CopyTaskConfig

A command takes any preset whose config has its class: `tfmr train --preset exp-moe` trains the
MoE experiment's base model, `tfmr train --preset g2p-tiny` is refused with the valid names.
The G2P and copy-task config classes live here (not in tfmr/tasks/) because they are plain data
made of seq2seq sections, and library code never imports the task programs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import checkpoint
from .config import (Choice, ConfigError, DataConfig, ModelConfig, RunConfig, SampleConfig, TrainConfig,
                     apply_override, from_dict, load_file, merge_into, set_field)
from .seq2seq import DecodeConfig, Seq2SeqTrainConfig


# ----------------------------------------------------------------------------- language models (tfmr train)
def default() -> RunConfig:
    """The `make lm` job: a char-level LM on the embedded corpus, a few minutes on 2 CPU cores."""
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
    """nanoGPT's `train_shakespeare_char` run at its CPU recipe size, for side-by-side benchmarks."""
    return RunConfig(
        model=ModelConfig(dim=128, layers=4, heads=4, context=64, dropout=0.0, bias=False),
        data=DataConfig(tokenizer=Choice("char"), val_fraction=0.1),
        train=TrainConfig(steps=2000, batch_size=12, lr=1e-3, min_lr=1e-4, warmup=100, beta2=0.99,
                          weight_decay=0.1, grad_clip=1.0, eval_every=250, eval_iters=20, log_every=10,
                          checkpoint_every=1000),
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
        model=ModelConfig(vocab_size=50304, dim=768, layers=12, heads=12, kv_heads=4, context=1024, bias=False,
                          pos=Choice("rope", base=10000.0), norm=Choice("rmsnorm"),
                          ffn=Choice("swiglu", hidden=2048)),
        train=TrainConfig(steps=5000, batch_size=12, lr=6e-4, min_lr=6e-5, warmup=200, beta2=0.95),
    )


# ----------------------------------------------------------------------------- experiments (tfmr experiment)
def exp_length_extrapolation() -> RunConfig:
    """Length extrapolation: char LM, 2 x 128, trained at context 64 for 600 steps (model.pos varies)."""
    return RunConfig(
        model=ModelConfig(dim=128, layers=2, heads=4, context=64, kernel=Choice("sdpa"), dropout=0.0),
        data=DataConfig(tokenizer=Choice("char")),  # cache: the experiment's OUT/data unless set
        train=TrainConfig(steps=600, batch_size=32, lr=2e-3, min_lr=2e-4, warmup=50, eval_every=600, eval_iters=5,
                          log_every=50, checkpoint_every=600, seed=1337, device="cpu", dtype="float32", threads=0),
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
    return RunConfig(model=ModelConfig(dim=128, layers=4, heads=4, context=256, pos=Choice("rope"),
                                       kernel=Choice("sdpa")),
                     train=TrainConfig(seed=1337, device="cpu", dtype="float32"))


def exp_mixers() -> RunConfig:
    """Transformer vs retention vs hybrid: char LM, 6 x 128, RoPE, context 128, 5 minutes each
    (the experiment's --minutes); evaluation every 100 steps."""
    return RunConfig(
        model=ModelConfig(dim=128, layers=6, heads=4, context=128, pos=Choice("rope"), kernel=Choice("sdpa")),
        data=DataConfig(tokenizer=Choice("char")),
        train=TrainConfig(steps=100000, batch_size=16, lr=2e-3, min_lr=2e-4, warmup=50, eval_every=100, eval_iters=5,
                          log_every=50, checkpoint_every=100000, seed=1337, device="cpu", dtype="float32"),
    )


# ----------------------------------------------------------------------------- G2P (tfmr g2p)
@dataclass
class G2PDataConfig:
    stress: bool = False  # keep the stress digits (AH0, EY1) in the phonemes
    dev_words: int = 1000  # dev words decoded (greedy) at each evaluation; 0 for none


@dataclass
class G2PConfig:
    """A G2P run: a G2P data section and a decode section instead of text data and sampling."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: G2PDataConfig = field(default_factory=G2PDataConfig)
    train: Seq2SeqTrainConfig = field(default_factory=Seq2SeqTrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def _g2p_model(dim: int, layers: int, heads: int, dropout: float, label_smoothing: float) -> ModelConfig:
    return ModelConfig(arch="encoder-decoder", dim=dim, layers=layers, encoder_layers=layers, heads=heads,
                       context=64, dropout=dropout, pos=Choice("learned"), residual=Choice("pre"),
                       ffn=Choice("mlp", mult=4, activation="gelu"), label_smoothing=label_smoothing,
                       share_embeddings=False, tie_embeddings=True)


# g2p-small trains a fixed number of steps, the schedule decayed over them, so the same seed gives the
# same model on a busy machine as on a quiet one (a wall-clock budget trained fewer steps, and a worse
# model, whenever the machine was shared). Sized on the 2-core AMD EPYC without AVX512-BF16 (so fp32
# training), 2 threads, quiet machine: the median step took 217-237 ms over two 60-second runs (4.2
# and 4.6 steps/s); 420 s x 4.4 steps/s = 1,850 steps, less the 4 evaluations' few seconds each:
# 1,800 steps. A CPU with bf16 (about 9 steps/s) takes about 3.5 minutes. Busy machines take
# longer; the model is the same.
STEPS_SMALL = 1800
# g2p-base, the shipped model's recipe: a fixed number of steps (the schedule decayed over them), so the
# run is the same in one sitting or several (`--resume`), on a quiet machine or a busy one.
STEPS_BASE = 8000
# g2p-long: g2p-base's model and batch trained 3.75 times as long, the schedule decayed over all of it;
# about 5 hours of 2 quiet fp32 cores (0.6 s a step), so it is meant to run across sittings (`--resume`).
STEPS_LONG = 30000


def g2p_tiny() -> G2PConfig:
    """Seconds-long G2P runs for tests and smoke checks."""
    return G2PConfig(model=_g2p_model(32, 1, 2, 0.0, 0.0), data=G2PDataConfig(dev_words=50),
                     train=Seq2SeqTrainConfig(steps=30, batch_size=32, lr=3e-3, min_lr=3e-4, warmup=5,
                                              eval_every=15, log_every=5, checkpoint_every=15, eval_pairs=100),
                     decode=DecodeConfig(beam_size=2, max_len=30))


def g2p_small() -> G2PConfig:
    """The `make run` job: a small G2P Transformer, STEPS_SMALL steps (about 7 minutes on 2 quiet CPU cores)."""
    return G2PConfig(model=_g2p_model(128, 2, 4, 0.0, 0.1), data=G2PDataConfig(dev_words=1000),
                     train=Seq2SeqTrainConfig(steps=STEPS_SMALL, batch_size=256, batch_tokens=5000, lr=2e-3,
                                              min_lr=1e-4, warmup=200, weight_decay=0.01, beta2=0.98, eval_every=500,
                                              log_every=10, checkpoint_every=500, max_minutes=0.0, eval_pairs=2000),
                     decode=DecodeConfig(beam_size=4, max_len=40))


def g2p_base() -> G2PConfig:
    """The shipped model's recipe: 3+3 layers of width 192 that predict stress, 8,000 steps (one command)."""
    return G2PConfig(model=_g2p_model(192, 3, 4, 0.1, 0.1), data=G2PDataConfig(stress=True, dev_words=1000),
                     train=Seq2SeqTrainConfig(steps=STEPS_BASE, batch_size=1 << 20, batch_tokens=4000, lr=1.6e-3,
                                              min_lr=8e-5, warmup=400, weight_decay=0.01, beta2=0.98,
                                              eval_every=1000, log_every=20, checkpoint_every=250, keep_last=8,
                                              eval_pairs=2000, max_minutes=0.0),
                     decode=DecodeConfig(beam_size=5, max_len=40))


def g2p_long() -> G2PConfig:
    """g2p-base trained STEPS_LONG steps: the compute the scaling curve asks for to approach 24.5% WER."""
    cfg = g2p_base()
    cfg.train.steps, cfg.train.eval_every = STEPS_LONG, 2000
    return cfg


def exp_g2p_scaling() -> G2PConfig:
    """WER against compute (tfmr experiment g2p-scaling): the batch tokens and peak lr its rule scales from."""
    cfg = g2p_small()
    cfg.train.batch_tokens, cfg.train.lr, cfg.train.threads = 2000, 2e-3, 0
    cfg.data.dev_words = 0  # scored on the whole dev and test splits after training
    return cfg


# ----------------------------------------------------------------------------- G2P experiments (tfmr experiment g2p-*)
# g2p-small's model at a fixed number of steps, sized so that each experiment (all its runs) takes
# about 5-10 minutes on 2 quiet CPU cores, from g2p-small's 4.4 steps/s: the scheduled-sampling kinds
# run 2 passes per step, the alignment kernels loop over target positions, guided attention needs the
# eager kernel. Not yet timed as whole experiments (docs/objectives.md: "to be measured").
def _exp_g2p(steps: int, eval_every: int | None = None) -> G2PConfig:
    cfg = g2p_small()
    t = cfg.train
    t.steps, t.warmup, t.eval_every, t.checkpoint_every = steps, max(1, steps // 10), eval_every or steps, steps
    t.eval_pairs, t.threads = 1000, 0
    cfg.data.dev_words = 0  # the experiments measure on the test split themselves
    return cfg


def exp_g2p_sampling() -> G2PConfig:
    """Teacher forcing vs scheduled sampling (3 kinds): g2p-small's model, 300 steps each (train.objective varies)."""
    return _exp_g2p(300)


def exp_g2p_guided() -> G2PConfig:
    """With and without the guided attention loss: g2p-small's model on the eager kernel, 500 steps each."""
    cfg = _exp_g2p(500, eval_every=25)
    cfg.model.kernel = Choice("eager")
    cfg.train.eval_pairs = 200
    return cfg


def exp_g2p_alignment() -> G2PConfig:
    """Plain vs each alignment kernel of cross-attention: g2p-small's model, 300 steps each."""
    return _exp_g2p(300)


# ----------------------------------------------------------------------------- copy task (tfmr copytask)
@dataclass
class CopyTaskConfig:
    """The copy task's two models (plain head and pointer-generator) share this shape and budget."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        arch="encoder-decoder", dim=64, layers=2, encoder_layers=2, heads=4, context=32, kernel=Choice("eager"),
        pos=Choice("learned"), share_embeddings=True, tie_embeddings=True))
    train: Seq2SeqTrainConfig = field(default_factory=lambda: Seq2SeqTrainConfig(
        steps=1500, batch_size=64, lr=2e-3, min_lr=1e-4, warmup=50, weight_decay=0.0, eval_every=250,
        log_every=20, checkpoint_every=10**9, eval_pairs=256, dtype="float32", threads=1))
    decode: DecodeConfig = field(default_factory=lambda: DecodeConfig(max_len=14))


def copytask() -> CopyTaskConfig:
    """Pointer-generator vs plain head, 1500 steps each (about a minute per head on one core); seed 0."""
    cfg = CopyTaskConfig()
    cfg.train.seed = 0  # also the data seed
    return cfg


def copytask_tiny() -> CopyTaskConfig:
    """Seconds-long copy-task runs for tests and smoke checks (the numbers mean nothing)."""
    cfg = copytask()
    cfg.model.dim, cfg.model.layers, cfg.model.encoder_layers, cfg.model.heads = 16, 1, 1, 2
    cfg.train.steps, cfg.train.warmup, cfg.train.eval_every, cfg.train.eval_pairs = 4, 1, 10**9, 16
    return cfg


# ----------------------------------------------------------------------------- the registry
# name -> (the command that uses it, the function). `tfmr presets` lists them in this order.
PRESETS: dict[str, tuple[str, Callable]] = {
    "default": ("train", default),
    "tiny": ("train", tiny),
    "nanogpt-shakespeare-char": ("train", nanogpt_shakespeare_char),
    "gpt2-124m": ("train", gpt2_124m),
    "llama-124m": ("train", llama_124m),
    "exp-length-extrapolation": ("experiment length-extrapolation", exp_length_extrapolation),
    "exp-norm-depth": ("experiment norm-depth", exp_norm_depth),
    "exp-moe": ("experiment moe", exp_moe),
    "exp-long-context": ("experiment long-context", exp_long_context),
    "exp-streaming": ("experiment streaming", exp_streaming),
    "exp-mixers": ("experiment mixers", exp_mixers),
    "g2p-tiny": ("g2p", g2p_tiny),
    "g2p-small": ("g2p", g2p_small),
    "g2p-base": ("g2p", g2p_base),
    "g2p-long": ("g2p", g2p_long),
    "exp-g2p-sampling": ("experiment g2p-sampling", exp_g2p_sampling),
    "exp-g2p-guided": ("experiment g2p-guided", exp_g2p_guided),
    "exp-g2p-alignment": ("experiment g2p-alignment", exp_g2p_alignment),
    "exp-g2p-scaling": ("experiment g2p-scaling", exp_g2p_scaling),
    "copytask": ("copytask", copytask),
    "copytask-tiny": ("copytask", copytask_tiny),
}


def names(cls: type = RunConfig) -> list[str]:
    """The presets whose config is a `cls`, in registry order."""
    return [name for name, (_, fn) in PRESETS.items() if isinstance(fn(), cls)]


def get(name: str, cls: type = RunConfig):
    """A fresh config from preset `name`; ConfigError, listing the valid names, if there is none
    or if it makes another kind of config (a G2P preset for `tfmr train`, say)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(names(cls))}")
    command, fn = PRESETS[name]
    cfg = fn()
    if not isinstance(cfg, cls):
        raise ConfigError(f"preset {name!r} is a {type(cfg).__name__} for `tfmr {command}`; valid presets "
                          f"here: {', '.join(names(cls))}")
    return cfg


# What each config class is, for messages about a checkpoint given to the wrong command.
KINDS: dict[type, tuple[str, str]] = {RunConfig: ("language-model", "tfmr train, generate, eval, viz, finetune"),
                                      G2PConfig: ("G2P", "tfmr g2p"), CopyTaskConfig: ("copy-task", "tfmr copytask")}


def _fits(cls: type, data: dict) -> bool:
    """Whether saved config `data` has sections of `cls` only, its model among them, and reads as
    one (a section added later, such as a language model's `decode`, may be missing)."""
    if not isinstance(data, dict) or "model" not in data or not set(data) <= {f.name for f in dataclasses.fields(cls)}:
        return False
    try:
        from_dict(cls, data)
    except ConfigError:
        return False
    return True


def read_run_config(directory: str | Path, cls: type = RunConfig):
    """The config saved in checkpoint `directory`, as a `cls`. A checkpoint written by another
    command (a G2P checkpoint given to `tfmr generate`, say) is refused with a CheckpointError
    that names its kind and the command that reads it, instead of an unknown-key error."""
    data = checkpoint.read_config(directory)
    try:
        return from_dict(cls, data)
    except ConfigError:
        for other, (kind, commands) in KINDS.items():
            if other is not cls and _fits(other, data):
                mine = KINDS.get(cls, (cls.__name__, ""))[0]
                raise checkpoint.CheckpointError(
                    f"{directory} is a {kind} checkpoint ({commands}); this command reads {mine} checkpoints") from None
        raise


def resolve(preset: str | None, config_file: str | Path | None = None, data: str | None = None,
            overrides: Sequence[str] = (), *, cls: type = RunConfig, saved: str | Path | None = None):
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
