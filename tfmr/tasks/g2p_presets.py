"""The G2P task's config (G2PConfig: model, data, train, decode) and its presets.

    g2p-tiny, g2p-small, g2p-base, g2p-long, g2p-fast, g2p-student   tfmr g2p train --preset NAME
    exp-g2p-sampling, -guided, -alignment, -scaling   the base runs of the G2P experiments

PRESETS maps each name to (the command that uses it, its function); this module adds them, and
the config class, to tfmr.presets' registries when it is imported (the library never imports a
task), and needs no torch, so `tfmr presets` and `tfmr g2p --help` list them without loading it
(tfmr/tasks/g2p.py, the task, imports this). What the recipes were sized on is said beside each
one; each preset's docstring is its description in `tfmr presets` and in docs/g2p.md's table
(tests/test_presets_text.py checks they agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import presets
from ..config import Choice, DecodeConfig, ModelConfig, Seq2SeqTrainConfig

# the task's name (its command, `tfmr g2p`) and title (the checkpoint kind in messages)
NAME, TITLE = "g2p", "G2P"


# ----------------------------------------------------------------------------- the config
@dataclass
class G2PDataConfig:
    stress: bool = False  # keep the stress digits (AH0, EY1) in the phonemes
    dev_words: int = 1000  # dev words decoded (greedy) at each evaluation; 0 for none
    # sequence-level distillation: a model (an export, an exported ensemble or a checkpoint) whose
    # beam output replaces each train word's pronunciations ("": the dictionary's)
    teacher: str = ""
    teacher_beam: int = 0  # the teacher's beam for the targets (0: its own decode.beam_size)


@dataclass
class G2PConfig:
    """A G2P run: a G2P data section and a decode section instead of text data and sampling."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: G2PDataConfig = field(default_factory=G2PDataConfig)
    train: Seq2SeqTrainConfig = field(default_factory=Seq2SeqTrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


# ----------------------------------------------------------------------------- the presets (tfmr g2p)
def _g2p_model(
    dim: int, layers: int, heads: int, dropout: float, label_smoothing: float
) -> ModelConfig:
    return ModelConfig(
        arch="encoder-decoder",
        dim=dim,
        layers=layers,
        encoder_layers=layers,
        heads=heads,
        context=64,
        dropout=dropout,
        pos=Choice("learned"),
        residual=Choice("pre"),
        ffn=Choice("mlp", mult=4, activation="gelu"),
        label_smoothing=label_smoothing,
        share_embeddings=False,
        tie_embeddings=True,
    )


# g2p-small trains a fixed number of steps, the schedule decayed over them, so the same seed gives the
# same model on a busy machine as on a quiet one (a wall-clock budget trained fewer steps, and a worse
# model, whenever the machine was shared). Its shape is the scaling experiment's compute-optimal one
# at a few minutes of these cores (2x96; docs/g2p.md, "A compute-optimal recipe"), with that
# experiment's learning rate rule (2e-3 x sqrt(128 / width)). Sized on the 2-core AMD EPYC without
# AVX512-BF16 (so fp32 training), 2 threads, quiet machine: 150 steps took 0.144 s each (2x128:
# 0.222 s); 2,900 steps are about 7 minutes with the evaluations. A CPU with bf16 takes about half.
# Busy machines take longer; the model is the same.
STEPS_SMALL = 2900
WIDTH_SMALL = 96
# g2p-base, the recipe of the model shipped before g2p-long: a fixed number of steps (the schedule
# decayed over them), so the run is the same in one sitting or several (`--resume`), on a quiet
# machine or a busy one.
STEPS_BASE = 8000
# g2p-long: g2p-base's model and batch trained 3.75 times as long, the schedule decayed over all of it;
# 5-7 hours of 2 quiet fp32 cores (0.55-0.9 s a step), so it is meant to run across sittings (`--resume`).
# The shipped model is the mean of its last 8 checkpoints (keep_last; tfmr checkpoint average).
STEPS_LONG = 30000
# the model shipped inside the package (g2p-long's averaged checkpoint, exported); tasks/g2p.py loads it
SHIPPED = Path(__file__).with_name("g2p_model")
# g2p-fast: a student whose teacher and starting weights are the shipped model, so the recipe runs
# from any install (the run folder it was first made from, runs/g2p-long/averaged, is not kept)
FAST_TEACHER = str(SHIPPED)
FAST_STEPS = 6000
# g2p-student: a 2x128 model (0.96M) trained from scratch on the shipped model's greedy
# pronunciations. At 12,000 steps (a 44-minute run, 2026-12-07) it met both speed goals (2,343 words/s
# greedy, one word 6.2 ms compiled) at 30.6% test WER, and its dev WER tracked g2p-long's own at
# the same steps; this is that run's recipe at g2p-long's 30,000 steps (5-6 steps/s on 2 quiet fp32
# cores, so about 1.5 hours), to see whether it keeps tracking to the WER goal. It did not: its
# 30,000-step run ended at 27.15% test WER greedy (the mean of its last 8), 3 points behind its
# teacher, decoding 2.1 times as fast (docs/g2p.md, "A small student from scratch").
STUDENT_STEPS = 30000


def g2p_tiny() -> G2PConfig:
    """Seconds-long G2P runs for tests and smoke checks: 1+1 layers of width 32, 30 steps."""
    return G2PConfig(
        model=_g2p_model(32, 1, 2, 0.0, 0.0),
        data=G2PDataConfig(dev_words=50),
        train=Seq2SeqTrainConfig(
            steps=30,
            batch_size=32,
            lr=3e-3,
            min_lr=3e-4,
            warmup=5,
            eval_every=15,
            log_every=5,
            checkpoint_every=15,
            eval_pairs=100,
        ),
        decode=DecodeConfig(beam_size=2, max_len=30),
    )


def g2p_small() -> G2PConfig:
    """The `make run` job: a small G2P Transformer, 2+2 layers of width 96, 4 heads, no dropout;
    2,900 steps (about 7 minutes on 2 quiet CPU cores in fp32)."""
    return G2PConfig(
        model=_g2p_model(WIDTH_SMALL, 2, 4, 0.0, 0.1),
        data=G2PDataConfig(dev_words=1000),
        train=Seq2SeqTrainConfig(
            steps=STEPS_SMALL,
            batch_size=256,
            batch_tokens=5000,
            lr=2e-3 * (128 / WIDTH_SMALL) ** 0.5,
            min_lr=1e-4,
            warmup=200,
            weight_decay=0.01,
            beta2=0.98,
            eval_every=500,
            log_every=10,
            checkpoint_every=500,
            max_minutes=0.0,
            eval_pairs=2000,
        ),
        decode=DecodeConfig(beam_size=4, max_len=40),
    )


def g2p_base() -> G2PConfig:
    """The model shipped before g2p-long: 3+3 layers of width 192, 4 heads, FFN 768, dropout 0.1,
    predicting stress; 8,000 steps of about 270 words (about 113 minutes on 2 CPU cores in fp32), resumable."""
    return G2PConfig(
        model=_g2p_model(192, 3, 4, 0.1, 0.1),
        data=G2PDataConfig(stress=True, dev_words=1000),
        train=Seq2SeqTrainConfig(
            steps=STEPS_BASE,
            batch_size=1 << 20,
            batch_tokens=4000,
            lr=1.6e-3,
            min_lr=8e-5,
            warmup=400,
            weight_decay=0.01,
            beta2=0.98,
            eval_every=1000,
            log_every=20,
            checkpoint_every=250,
            keep_last=8,
            eval_pairs=2000,
            max_minutes=0.0,
        ),
        decode=DecodeConfig(beam_size=5, max_len=40),
    )


def g2p_long() -> G2PConfig:
    """The shipped model's recipe: g2p-base's model trained 30,000 steps (5-7 hours of 2 quiet CPU
    cores in fp32, across sittings with --resume), then the mean of its last 8 checkpoints exported."""
    cfg = g2p_base()
    cfg.train.steps, cfg.train.eval_every = STEPS_LONG, 2000
    return cfg


def g2p_fast() -> G2PConfig:
    """A fast student of the shipped model (g2p-long): 2+1 layers of width 192 started from its weights
    (train.init keeps its encoder layers 0 and 2 and decoder layer 0) and trained on its beam-5
    pronunciations (data.teacher); 6,000 steps (about 50 minutes on 2 CPU cores in fp32, after a
    9-minute teacher pass), resumable."""
    cfg = g2p_base()
    cfg.model.encoder_layers, cfg.model.layers = 2, 1
    cfg.data.teacher = cfg.train.init = FAST_TEACHER
    t = cfg.train
    t.steps, t.lr, t.min_lr, t.warmup, t.eval_every = FAST_STEPS, 8e-4, 4e-5, 200, 1000
    return cfg


def g2p_student() -> G2PConfig:
    """A small, fast student of the shipped model: 2+2 layers of width 128 (0.96M parameters),
    dropout 0.1, trained from scratch on the shipped model's greedy pronunciations (data.teacher);
    30,000 steps (about 1.5 hours on 2 CPU cores in fp32), resumable, the last 8 checkpoints kept."""
    cfg = g2p_small()
    cfg.model = _g2p_model(128, 2, 4, 0.1, 0.1)
    cfg.data.stress, cfg.data.teacher, cfg.data.teacher_beam = True, FAST_TEACHER, 1
    t = cfg.train
    t.steps, t.lr, t.min_lr, t.warmup = STUDENT_STEPS, 2e-3, 1e-4, 400
    t.eval_every, t.checkpoint_every, t.keep_last = 2000, 250, 8
    return cfg


def exp_g2p_scaling() -> G2PConfig:
    """WER against compute (tfmr experiment g2p-scaling): the batch tokens and peak lr its rule scales from."""
    cfg = g2p_small()
    cfg.train.batch_tokens, cfg.train.lr, cfg.train.threads = 2000, 2e-3, 0
    cfg.data.dev_words = 0  # scored on the whole dev and test splits after training
    return cfg


# ----------------------------------------------------------------------------- experiments (tfmr experiment g2p-*)
# The 2x128 model g2p-small had when these were measured (docs/objectives.md), at a fixed number of
# steps, sized so that each experiment (all its runs) takes about 5-10 minutes on 2 quiet CPU cores
# at its 4.4 steps/s: the scheduled-sampling kinds run 2 passes per step, the alignment kernels
# loop over target positions, guided attention needs the eager kernel.
def _exp_g2p(steps: int, eval_every: int | None = None) -> G2PConfig:
    cfg = g2p_small()
    cfg.model, cfg.train.lr = _g2p_model(128, 2, 4, 0.0, 0.1), 2e-3
    t = cfg.train
    t.steps, t.warmup, t.eval_every, t.checkpoint_every = (
        steps,
        max(1, steps // 10),
        eval_every or steps,
        steps,
    )
    t.eval_pairs, t.threads = 1000, 0
    cfg.data.dev_words = 0  # the experiments measure on the test split themselves
    return cfg


def exp_g2p_sampling() -> G2PConfig:
    """Teacher forcing vs scheduled sampling (3 kinds): a 2x128 model, 300 steps each (train.objective varies)."""
    return _exp_g2p(300)


def exp_g2p_guided() -> G2PConfig:
    """With and without the guided attention loss: a 2x128 model on the eager kernel, 500 steps each."""
    cfg = _exp_g2p(500, eval_every=25)
    cfg.model.kernel = Choice("eager")
    cfg.train.eval_pairs = 200
    return cfg


def exp_g2p_alignment() -> G2PConfig:
    """Plain vs each alignment kernel of cross-attention: a 2x128 model, 300 steps each."""
    return _exp_g2p(300)


# name -> (the command that uses it, the function), in the order `tfmr presets` lists them
PRESETS: dict[str, tuple[str, Callable]] = {
    "g2p-tiny": ("g2p", g2p_tiny),
    "g2p-small": ("g2p", g2p_small),
    "g2p-base": ("g2p", g2p_base),
    "g2p-long": ("g2p", g2p_long),
    "g2p-fast": ("g2p", g2p_fast),
    "g2p-student": ("g2p", g2p_student),
    "exp-g2p-sampling": ("experiment g2p-sampling", exp_g2p_sampling),
    "exp-g2p-guided": ("experiment g2p-guided", exp_g2p_guided),
    "exp-g2p-alignment": ("experiment g2p-alignment", exp_g2p_alignment),
    "exp-g2p-scaling": ("experiment g2p-scaling", exp_g2p_scaling),
}

presets.register(G2PConfig, TITLE, f"tfmr {NAME}", PRESETS)
