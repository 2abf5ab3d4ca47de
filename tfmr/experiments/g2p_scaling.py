"""G2P WER against training compute: which shape (depth x width) is compute-optimal on these cores,
and how WER falls with compute (a fitted power law, and the compute it predicts for a target WER).

    tfmr experiment g2p-scaling --out runs/g2p-scaling                 # 4 shapes x 3 budgets
    tfmr experiment g2p-scaling --shapes 2x128,3x192 --budgets 4,8     # a subset
    tfmr experiment g2p-scaling --preset g2p-tiny --shapes 1x32 --budgets 0.01 --limit 100   # a smoke run

Compute is counted in training FLOPs, 6 per weight per token that weight reads (forward and
backward), the usual 6ND rule split by where each weight works: the encoder's weights on source
letters, the decoder's (and the output matrix) on target phonemes, cross-attention's key and value
projections on source letters (`train_flops`). A budget in TFLOPs is turned into steps from the
mean letters and phonemes per batch of the first epoch, so the same budget gives the same number of
steps on any machine; the minutes each run took on this machine are recorded beside it.

Each budget gets the batch size and learning rate it wants, by one rule (`plan`): batches of
train.batch_tokens padded tokens at the smallest budget (2,000 in the preset exp-g2p-scaling),
growing with the square root of the budget (a larger budget trains at a lower loss, where larger
batches stop wasting steps); the peak learning rate train.lr (2e-3) at width 128, scaled by
sqrt(128 / width); 10% warmup, then cosine to lr / 20. Dropout is off (a run of a few epochs does
not overfit). Every run starts from the same seed (train.seed).

Each run is scored on the whole dev split (greedy WER and PER; the choice of shape uses dev) and on
the test split. With `data.stress=true` the WER with stress and the WER with the predicted stress
removed are both reported. The compute-optimal frontier (the lowest dev WER at each budget) is
fitted as WER = a * C^-b in log space, and the fit says what compute would reach `--target`.
`--runs RUN ...` places finished `tfmr g2p train` runs (the shipped model's recipe, say) on the
plot as stars, scored the same way, with what the fit said for their compute: a check of the
extrapolation. A run whose OUT/SHAPE@BUDGET/result.json exists is not trained again, so an
interrupted experiment continues where it stopped (and a re-run with other --runs only scores).
Writes OUT/table.md, OUT/results.json and OUT/g2p-scaling.png.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from ..config import ConfigError
from ..programs import out_folder, resolve_config, short
from ..seq2seq import BucketBatches
from ..tasks import g2p
from .g2p_common import add_common, figure, markdown, pct, save, train_variant, write

SHAPES = "2x96,2x128,3x192,3x256"
BUDGETS = "3,6,12"  # TFLOPs


def add_arguments(p) -> None:
    add_common(p, "exp-g2p-scaling", "runs/g2p-scaling")
    p.add_argument(
        "--shapes",
        default=SHAPES,
        help=f"LAYERSxWIDTH, comma-separated (default {SHAPES}); "
        "LAYERS each for the encoder and the decoder",
    )
    p.add_argument(
        "--budgets", default=BUDGETS, help=f"training compute per run in TFLOPs (default {BUDGETS})"
    )
    p.add_argument(
        "--target",
        type=float,
        default=24.5,
        help="the WER (%%) whose compute the fit predicts (default 24.5)",
    )
    p.add_argument(
        "--runs",
        nargs="*",
        default=[],
        metavar="RUN",
        help="finished `tfmr g2p train` runs to place beside the fit (their compute from their "
        "steps, shape and batches; scored on dev like the grid; stress left out)",
    )


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in text.split(","):
        try:
            layers, width = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ConfigError(
                f"--shapes: {item!r} is not LAYERSxWIDTH (for example 2x128)"
            ) from None
        if layers < 1 or width < 8 or width % 4:
            raise ConfigError(
                f"--shapes: {item!r} needs at least 1 layer and a width that is a multiple of 4"
            )
        shapes.append((layers, width))
    return shapes


def parse_budgets(text: str) -> list[float]:
    try:
        budgets = sorted(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--budgets: {text!r} is not a comma-separated list of TFLOPs") from None
    if not budgets or budgets[0] <= 0 or not math.isfinite(budgets[-1]):
        raise ConfigError(f"--budgets must be positive, got {text!r}")
    return budgets


def train_flops(
    layers: int,
    enc_layers: int,
    dim: int,
    ffn_mult: int,
    tgt_vocab: int,
    src_tokens: float,
    tgt_tokens: float,
) -> float:
    """Training FLOPs (6 per weight per token) of an encoder-decoder for `src_tokens` letters and
    `tgt_tokens` phonemes: per encoder layer 4d^2 (attention) + 2*mult*d^2 (FFN) on each letter;
    per decoder layer 4d^2 (self) + 2d^2 (cross query, output) + 2*mult*d^2 on each phoneme and 2d^2
    (cross key, value) on each letter; the output matrix d*V on each phoneme. Attention scores and
    embeddings lookups are left out (words are short: about 8 letters)."""
    d2, ffn = dim * dim, 2 * ffn_mult * dim * dim
    per_letter = enc_layers * (4 * d2 + ffn) + layers * 2 * d2
    per_phoneme = layers * (6 * d2 + ffn) + dim * tgt_vocab
    return 6.0 * (per_letter * src_tokens + per_phoneme * tgt_tokens)


def batch_means(pairs, batch_tokens: int, seed: int) -> tuple[float, float]:
    """Mean real letters and phonemes (+ </s>) per batch over the first epoch's batches."""
    batches = BucketBatches(pairs, 1 << 20, batch_tokens, seed).epoch_batches(0)
    src = sum(len(s) for s, _ in pairs)
    tgt = sum(len(t) + 1 for _, t in pairs)
    return src / len(batches), tgt / len(batches)


def plan(
    base: g2p.G2PConfig, shape: tuple[int, int], budget: float, smallest: float, data: g2p.G2PData
) -> tuple[g2p.G2PConfig, float]:
    """The run for one shape at one budget (TFLOPs), and its FLOPs per step: the base run's
    train.batch_tokens at the smallest budget and train.lr at width 128, scaled as the module says."""
    layers, dim = shape
    cfg = copy.deepcopy(base)
    m, t = cfg.model, cfg.train
    batch_tokens, lr = t.batch_tokens, t.lr
    m.layers = m.encoder_layers = layers
    m.dim, m.heads, m.dropout = dim, 4, 0.0
    tokens = short("batch_tokens", int(round(batch_tokens * math.sqrt(budget / smallest))))
    src, tgt = batch_means(data.pairs("train"), tokens, t.seed)
    per_step = train_flops(
        layers, layers, dim, m.ffn.options.get("mult", 4), len(data.vocab.tgt), src, tgt
    )
    steps = short("steps", max(10, round(budget * 1e12 / per_step)))
    t.steps, t.batch_tokens, t.batch_size = steps, tokens, 1 << 20
    t.lr = lr * math.sqrt(128 / dim)
    t.min_lr, t.warmup, t.max_minutes = t.lr / 20, max(1, steps // 10), 0.0
    t.eval_every = t.checkpoint_every = steps
    cfg.data.dev_words = 0
    return cfg, per_step


def score(model, data: g2p.G2PData, split: str, cfg: g2p.G2PConfig, limit: int | None) -> dict:
    """Greedy WER / PER on `split`; with stress, also with the predicted stress removed."""
    r = g2p.evaluate(model, data, split, 1, cfg.decode.max_len, cfg.decode.batch_size, limit=limit)
    keys = ("wer", "per", "words", "wer_no_stress", "per_no_stress")
    return {k: r[k] for k in keys if k in r}


def run_one(base, shape, budget, smallest, args, data, out: Path) -> dict:
    """Train and score one shape at one budget, or read its saved result."""
    folder = out / f"{shape[0]}x{shape[1]}@{budget:g}"
    saved = folder / "result.json"
    if saved.exists():
        return json.loads(saved.read_text())
    cfg, per_step = plan(base, shape, budget, smallest, data)
    print(
        f"training {shape[0]}x{shape[1]} at {budget:g} TFLOPs: {cfg.train.steps} steps of "
        f"{cfg.train.batch_tokens} tokens, lr {cfg.train.lr:.2g} ...",
        flush=True,
    )
    trainer = train_variant(cfg, folder, data, not args.no_progress)
    params = sum(p.numel() for p in trainer.model.parameters())
    r = {
        "shape": f"{shape[0]}x{shape[1]}",
        "layers": shape[0],
        "dim": shape[1],
        "params": params,
        "budget_tflops": budget,
        "tflops": trainer.step * per_step / 1e12,
        "steps": trainer.step,
        "batch_tokens": cfg.train.batch_tokens,
        "lr": cfg.train.lr,
        "minutes": trainer.seconds / 60,
        "epochs": trainer.batches.epoch + trainer.batches.index / len(trainer.batches),
        "dev": score(trainer.model, data, "dev", cfg, args.limit),
        "test": score(trainer.model, data, "test", cfg, args.limit),
    }
    saved.write_text(json.dumps(r, indent=1))
    return r


def score_run(run: str, limit: int | None) -> dict:
    """A finished training run (RUN/checkpoint) scored as the grid's runs are: its compute, dev WER
    with the stress left out (a model that predicts stress is scored as a stress-free one)."""
    from ..checkpoint import load_state

    folder = Path(run) / "checkpoint"
    model, vocab, cfg = g2p.TASK.load_model(folder)
    step = load_state(folder)[1]["step"]
    data = g2p.load_data(cfg.data.stress)
    data = g2p.G2PData(data.splits, vocab, data.stress)  # the run's own ids
    m = cfg.model
    src, tgt = batch_means(data.pairs("train"), cfg.train.batch_tokens or 1 << 20, cfg.train.seed)
    per_step = train_flops(
        m.layers, m.encoder_layers, m.dim, m.ffn.options.get("mult", 4), len(vocab.tgt), src, tgt
    )
    dev = g2p.stress_free(
        g2p.evaluate(model, data, "dev", 1, cfg.decode.max_len, cfg.decode.batch_size, limit=limit)
    )
    return {
        "run": str(run),
        "shape": f"{m.encoder_layers}x{m.dim}",
        "params": sum(p.numel() for p in model.parameters()),
        "steps": step,
        "tflops": step * per_step / 1e12,
        "stress": cfg.data.stress,
        "dev": {"wer": dev[0], "per": dev[1]},
    }


def frontier(results: list[dict]) -> list[dict]:
    """The lowest dev WER at each budget."""
    best: dict[float, dict] = {}
    for r in results:
        b = r["budget_tflops"]
        if b not in best or r["dev"]["wer"] < best[b]["dev"]["wer"]:
            best[b] = r
    return [best[b] for b in sorted(best)]


def fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares of log WER = log a - b log C: (a, b), or None with fewer than 2 points at
    different compute (nothing to fit a slope to)."""
    if len(points) < 2:
        return None
    xs, ys = [math.log(c) for c, _ in points], [math.log(w) for _, w in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return math.exp(my - slope * mx), -slope


def predicted_compute(a: float, b: float, target: float) -> float | None:
    """The compute C with a * C^-b = target, or None when the fit does not fall (b <= 0)."""
    return (a / target) ** (1 / b) if b > 0 else None


HEADER = [
    "shape",
    "params",
    "budget (TFLOPs)",
    "steps",
    "batch tokens",
    "lr",
    "epochs",
    "minutes here",
    "dev WER",
    "dev PER",
    "test WER",
    "test PER",
]


def row(r: dict) -> list:
    return [
        r["shape"],
        f"{r['params'] / 1e6:.2f}M",
        f"{r['budget_tflops']:g}",
        r["steps"],
        r["batch_tokens"],
        f"{r['lr']:.2g}",
        f"{r['epochs']:.2f}",
        f"{r['minutes']:.1f}",
        pct(r["dev"]["wer"]),
        pct(r["dev"]["per"]),
        pct(r["test"]["wer"]),
        pct(r["test"]["per"]),
    ]


def plot(results, best, law, target, path, title, runs=()):
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    plt, fig, ax = figure()
    for shape in dict.fromkeys(r["shape"] for r in results):
        rs = sorted((r for r in results if r["shape"] == shape), key=lambda r: r["tflops"])
        ax.plot(
            [r["tflops"] for r in rs],
            [100 * r["dev"]["wer"] for r in rs],
            "o-",
            label=f"{shape} ({rs[0]['params'] / 1e6:.2f}M)",
        )
    if law is not None:
        a, b = law
        lo, hi = best[0]["tflops"], best[-1]["tflops"]
        reach = predicted_compute(a, b, target / 100)
        end = max(hi, reach or hi) * 1.2 if reach and reach < 1e3 * hi else hi * 4
        xs = [lo * (end / lo) ** (i / 40) for i in range(41)]
        ax.plot(
            xs, [100 * a * x**-b for x in xs], "k--", lw=1, label=f"fit {100 * a:.0f}% x C^{-b:.3f}"
        )
        ax.axhline(target, color="grey", lw=0.8, ls=":")
        ax.text(xs[0], target, f" {target:g}%", va="bottom", fontsize=8, color="grey")
    for r in runs:
        ax.plot(
            [r["tflops"]],
            [100 * r["dev"]["wer"]],
            "*",
            ms=12,
            label=f"{r['shape']} full run, {r['steps']:,} steps"
            + (" (stress left out)" if r["stress"] else ""),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_yticks([t for t in (20, 25, 30, 40, 50, 60, 80, 100)])
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("training compute (TFLOPs)")
    ax.set_ylabel("dev WER (%), greedy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save(fig, path)


def main(args) -> int:
    base = resolve_config(args, g2p.G2PConfig)
    shapes, budgets = parse_shapes(args.shapes), parse_budgets(args.budgets)
    # TFMR_DOCS_SHORT: the first shapes and budgets, a few test words
    shapes, budgets = (
        shapes[: short("variants", len(shapes))],
        budgets[: short("variants", len(budgets))],
    )
    args.limit = short("words", args.limit)
    if base.train.batch_tokens < 64:
        raise ConfigError(
            f"train.batch_tokens must be at least 64 here, got {base.train.batch_tokens}"
        )
    out = out_folder(args.out)
    data = g2p.load_data(base.data.stress)
    results = [
        run_one(base, s, b, budgets[0], args, data, out) for b in budgets for s in shapes
    ]  # cheapest first
    best = frontier(results)
    law = fit([(r["tflops"], r["dev"]["wer"]) for r in best])
    rows = [row(r) for r in results]
    runs = [score_run(run, args.limit) for run in args.runs]
    summary = summarise(best, law, args.target, runs)
    title = f"G2P dev WER against training compute, {len(shapes)} shapes x {len(budgets)} budgets"
    plot(results, best, law, args.target, out / "g2p-scaling.png", title, runs)
    write(
        out,
        "g2p-scaling",
        title,
        markdown(HEADER, rows) + "\n\n" + summary,
        {
            "runs": results,
            "full_runs": runs,
            "frontier": [r["shape"] + "@" + f"{r['budget_tflops']:g}" for r in best],
            "fit": None if law is None else {"a": law[0], "b": law[1]},
            "target_tflops": None if law is None else predicted_compute(*law, args.target / 100),
        },
        args,
        base,
    )
    return 0


def summarise(best: list[dict], law, target: float, runs=()) -> str:
    lines = [
        "Compute-optimal (lowest dev WER) at each budget: "
        + ", ".join(
            f"{r['budget_tflops']:g} TFLOPs -> {r['shape']} ({pct(r['dev']['wer'])})" for r in best
        )
    ]
    if law is not None:
        a, b = law
        reach = predicted_compute(a, b, target / 100)
        rate = sum(r["tflops"] for r in best) / max(sum(r["minutes"] for r in best), 1e-9)
        lines.append(f"Fit of the frontier: dev WER = {100 * a:.1f}% x C^{-b:.3f} (C in TFLOPs).")
        if reach is not None:
            lines.append(
                f"Extrapolated compute for {target:g}% dev WER: {reach:,.0f} TFLOPs, about "
                f"{reach / rate / 60:,.1f} hours at this machine's {rate * 60:,.0f} TFLOPs per hour."
            )
    for r in runs:
        said = (
            ""
            if law is None
            else f"; the fit says {100 * law[0] * r['tflops'] ** -law[1]:.2f}% at its compute"
        )
        lines.append(
            f"Full run {r['run']} ({r['shape']}, {r['steps']:,} steps, {r['tflops']:,.0f} TFLOPs): dev WER "
            f"{pct(r['dev']['wer'])}{' with the predicted stress left out' if r['stress'] else ''}{said}."
        )
    return "\n\n".join(lines)
