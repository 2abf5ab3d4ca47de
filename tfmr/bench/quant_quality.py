"""Quality of weight-only quantization beside fp32: what each byte saved costs (nothing is timed).

    tfmr bench quant-quality [--only lm,g2p] [--steps 400] [--checkpoint DIR] [--g2p-checkpoint DIR]
                             [--limit N] [--json FILE]

    lm    held-out perplexity of a small tfmr language model at fp32, bf16 and int8 (tfmr/quantize.py):
          trained here for --steps steps on the text `tfmr lm train` reads by default (the embedded
          corpus, the `default` preset: a character model of 4 layers, width 192, context 128), or
          read from --checkpoint; scored on up to --windows non-overlapping windows of the held-out
          tail (`data.val_fraction`), the same windows for every precision
    g2p   test WER / PER of the shipped G2P model (or --g2p-checkpoint) decoded greedily at each
          precision, scored by the task's own scorer (stress left out, and kept), with the share of
          words pronounced exactly as fp32 does

Each row gives the bytes of the linear layers' matrices (and scales) beside the quality, so the
table reads as "this many bytes saved cost this much". `tfmr bench cpu-decode` runs the `lm` part
under its speed table (`lm_quality`); greedy agreement on the random-weight GPT-2 is in that table.
Quality does not depend on the load of the machine, so these figures hold on a busy one.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..programs import count, positive_int
from ..quantize import WEIGHTS, quantize_, weight_bytes

PARTS = ("lm", "g2p")
PRECISIONS = tuple(WEIGHTS)  # fp32 first, then every weight-only kind


def matrix_bytes(model: nn.Module) -> int:
    """Bytes of the matrices quantization replaces: every linear layer's weight (and scales); a
    tied output head counts once more, as the head reads it whole."""
    dense = sum(
        m.weight.numel() * m.weight.element_size()
        for m in model.modules()
        if isinstance(m, nn.Linear)
    )
    return dense + weight_bytes(model)


@torch.no_grad()
def perplexity(model: nn.Module, ids: np.ndarray, context: int, windows: int, batch: int = 16):
    """(perplexity, tokens scored): exp of the mean next-token cross-entropy over the first
    `windows` non-overlapping windows of `context` tokens of `ids` (1-D)."""
    n = min(windows, (len(ids) - 1) // context)
    if n < 1:
        raise ConfigError(
            f"the held-out text has {len(ids)} tokens; one window needs {context + 1}"
        )
    flat = torch.from_numpy(np.asarray(ids[: n * context + 1], dtype=np.int64))
    x, y = flat[:-1].view(n, context), flat[1:].view(n, context)  # (n, context) each
    total = 0.0
    for i in range(0, n, batch):
        logits = model(x[i : i + batch]).logits  # (b, context, vocab)
        total += F.cross_entropy(
            logits.flatten(0, 1).float(), y[i : i + batch].flatten(), reduction="sum"
        ).item()
    return math.exp(total / (n * context)), n * context


def _copies(model: nn.Module, weights=PRECISIONS) -> dict:
    """{weights: the model with those weights}; fp32 is the model itself."""
    return {w: model if w == "fp32" else quantize_(copy.deepcopy(model), w) for w in weights}


def _trained_lm(steps: int, preset: str, log):
    """(model, held-out ids, what it is): a language model trained here for `steps` steps."""
    from ..presets import resolve
    from ..train import Trainer

    cfg = resolve(
        preset,
        overrides=[f"train.{k}={steps}" for k in ("steps", "eval_every", "checkpoint_every")],
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, progress=False, log=lambda *_: None)
        log(f"lm: training the {preset} preset for {steps} steps on the embedded corpus ...")
        trainer.fit()
    c = trainer.cfg.model
    what = (
        f"the `{preset}` preset ({c.layers} layers, width {c.dim}, context {c.context}, "
        f"{trainer.data.tokenizer.kind} tokens) trained {steps} steps here on the embedded corpus"
    )
    return trainer.model.eval(), np.asarray(trainer.data.val), what


def _saved_lm(path: str):
    """(model, held-out ids, what it is): a language-model checkpoint and the tail of its text."""
    from ..config import RunConfig
    from ..data import read_text
    from ..loading import load
    from ..quantize import saved_weights

    loaded = load(path, RunConfig, runs=True)
    if saved_weights(loaded.config) != "fp32":
        raise ConfigError(f"--checkpoint {path} is quantized already; give its fp32 checkpoint")
    if loaded.model.cfg.arch != "decoder":
        raise ConfigError(f"--checkpoint {path} is not a language model ({loaded.model.cfg.arch})")
    cfg = loaded.config
    ids = np.asarray(loaded.vocab.encode(read_text(cfg.data.path)))
    held_out = ids[-max(1, int(len(ids) * cfg.data.val_fraction)) :]
    return loaded.model.eval(), held_out, f"the checkpoint {path}"


def lm_quality(
    checkpoint: str | None = None,
    steps: int = 400,
    windows: int = 128,
    preset: str = "default",
    log=print,
) -> dict:
    """Held-out perplexity of a language model at every precision: {"model", "tokens", "rows"}."""
    model, held_out, what = _saved_lm(checkpoint) if checkpoint else _trained_lm(steps, preset, log)
    context = model.cfg.context
    rows = []
    for w, m in _copies(model).items():
        ppl, tokens = perplexity(m, held_out, context, windows)
        rows.append({"weights": w, "matrices_mb": matrix_bytes(m) / 1e6, "perplexity": ppl})
    base = rows[0]["perplexity"]
    for r in rows:
        r["change"] = r["perplexity"] / base - 1
    return {"model": what, "tokens": tokens, "rows": rows}


def g2p_quality(checkpoint: str | None = None, limit: int | None = None, log=print) -> dict:
    """Greedy test WER / PER of a G2P model at every precision: {"model", "words", "rows"}."""
    from ..tasks import g2p

    model, _, cfg = g2p.TASK.load_model(checkpoint) if checkpoint else g2p.load_shipped()
    data = g2p.TASK.load_data(cfg)
    rows, reference = [], None
    for w, m in _copies(model.float().eval()).items():
        log(f"g2p: decoding the test split greedily with {w} weights ...")
        r = g2p.TASK.evaluate(m, data, "test", 1, cfg.decode.max_len, limit=limit)
        reference = reference or r["predictions"]
        same = sum(r["predictions"][s] == reference[s] for s in reference) / len(reference)
        wer, per = g2p.stress_free(r)
        rows.append(
            {
                "weights": w,
                "matrices_mb": matrix_bytes(m) / 1e6,
                "wer": wer,
                "per": per,
                "wer_stress": r["wer"] if data.stress else None,
                "per_stress": r["per"] if data.stress else None,
                "same_as_fp32": same,
            }
        )
    what = checkpoint or "the shipped model"
    return {"model": what, "words": len(reference), "rows": rows}


def lm_lines(result: dict) -> list[str]:
    """The perplexity table in markdown."""
    lines = [
        f"Held-out perplexity of {result['model']} ({result['tokens']:,} held-out tokens):",
        "",
        "| weights | matrices (MB) | held-out perplexity | change vs fp32 |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['weights']} | {r['matrices_mb']:.2f} | {r['perplexity']:.4f} | {r['change']:+.3%} |"
        )
    return lines


def g2p_lines(result: dict) -> list[str]:
    """The G2P WER / PER table in markdown."""
    lines = [
        f"G2P test WER / PER of {result['model']}, greedy, {result['words']:,} test words:",
        "",
        "| weights | matrices (MB) | WER | PER | WER with stress | PER with stress | words as fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        stress = [
            "-" if r[k] is None else f"{100 * r[k]:.2f}%" for k in ("wer_stress", "per_stress")
        ]
        lines.append(
            f"| {r['weights']} | {r['matrices_mb']:.2f} | {100 * r['wer']:.2f}% | "
            f"{100 * r['per']:.2f}% | {stress[0]} | {stress[1]} | {r['same_as_fp32']:.2%} |"
        )
    return lines


def add_arguments(p) -> None:
    p.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}"
    )
    p.add_argument(
        "--steps", type=positive_int, default=400, help="training steps of the lm part's model"
    )
    p.add_argument(
        "--preset", default="default", help="the lm part's preset (trained on the embedded corpus)"
    )
    p.add_argument(
        "--windows", type=positive_int, default=128, help="held-out windows the perplexity reads"
    )
    p.add_argument("--checkpoint", help="a trained language-model checkpoint instead of training")
    p.add_argument("--g2p-checkpoint", help="a G2P checkpoint or export (default: the shipped one)")
    p.add_argument("--limit", type=positive_int, help="only the first N G2P test words (md5 order)")
    p.add_argument("--threads", type=count, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--json", type=Path, help="also write the results here")


def parts(only: str) -> list[str]:
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    for s in chosen:
        if s not in PARTS:
            raise ConfigError(
                f"--only {only}: each part must be one of {', '.join(PARTS)}, got {s!r}"
            )
    return chosen


def main(args) -> int:
    chosen = parts(args.only)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {}
    if "lm" in chosen:
        result["lm"] = lm_quality(args.checkpoint, args.steps, args.windows, args.preset)
        print("\n" + "\n".join(lm_lines(result["lm"])) + "\n")
    if "g2p" in chosen:
        result["g2p"] = g2p_quality(args.g2p_checkpoint, args.limit)
        print("\n" + "\n".join(g2p_lines(result["g2p"])) + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
