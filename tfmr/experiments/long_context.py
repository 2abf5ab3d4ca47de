"""Loss by position on long text: how far past its training length L each way of handling long
context keeps predicting well, out to 16L.

Three models train on the same text with the same budget (model shape, steps, batches, seed) at
length L = model.context, RoPE positions (sinks and Transformer-XL need relative positions):

    attention   dense causal attention, random windows of L tokens (tfmr's Trainer)
    xl          the same, trained on runs of `--segments` consecutive segments of L with a memory
                of L per layer (Transformer-XL: `Model.new_memory`, detached memory)
    retention   every layer RetNet retention (`model.mixer=retention`)

Then each row scores the same held-out windows of 16L tokens (the embedded corpus unless --data):

    full        attention: one forward over all 16L tokens
    sliding     attention with a sliding window of L (`attention_pattern=sliding`)
    sinks       attention decoded token by token with `sinks` 4 + a window of L - 4
                (StreamingLLM: positions inside the cache)
    xl          xl: segments of L, each with the previous segment's memory
    retention   retention: one forward (its parallel form)

The table gives the mean loss per position bucket ([0, L), [L, 2L), [2L, 4L), ...), the plot the
loss per L-long stretch. Writes results.json, table.md and loss_by_position.png in --out.

    tfmr experiment long-context --out runs/long-context
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..builder import relative_positions
from ..config import Choice, ConfigError, RunConfig, to_dict
from ..data import Batches
from ..patterns import Sinks, SlidingWindow
from ..programs import config_flags, out_folder, positive_int, resolve_config
from ..train import Trainer
from .plots import save

MODELS = ("attention", "xl", "retention")
ROWS = ("full", "sliding", "sinks", "xl", "retention")


class SegmentTrainer(Trainer):
    """Transformer-XL training: each row of a batch is `segments` consecutive segments of L
    tokens, run in order with a fresh memory of L per layer; the loss is their mean. Rows are
    train.batch_size / segments, so a step sees as many tokens as the other models' steps."""

    def __init__(self, *args, segments: int = 4, **kwargs):
        self.segments = segments  # read by setup_data, which the loop's constructor calls
        super().__init__(*args, **kwargs)

    def setup_data(self) -> None:
        super().setup_data()
        t = self.cfg.train
        rows = max(1, t.batch_size // self.segments)
        self.batches = Batches(
            self.data.train, self.cfg.model.context * self.segments, rows, t.seed
        )

    def batch_loss(self) -> torch.Tensor:
        x, y = self.batches.next(self.device)  # (B, segments * L)
        self.tokens += x.numel()
        L = self.cfg.model.context
        memory = self.model.new_memory(L)
        losses = [
            self.forward(x[:, i : i + L], y[:, i : i + L], cache=memory).loss
            for i in range(0, x.shape[1], L)
        ]
        return torch.stack(losses).mean()


def add_arguments(p) -> None:
    config_flags(p, preset="exp-long-context")
    p.add_argument("--out", default="runs/long-context", help="folder for models, table and plot")
    p.add_argument(
        "--factor", type=positive_int, default=16, help="evaluation length as a multiple of L"
    )
    p.add_argument(
        "--windows",
        type=positive_int,
        default=4,
        help="held-out windows of factor x L tokens to score",
    )
    p.add_argument("--sinks", type=positive_int, default=4, help="attention sinks of the sinks row")
    p.add_argument(
        "--segments", type=positive_int, default=4, help="consecutive segments per XL training row"
    )


def model_config(base: RunConfig, name: str, out: Path) -> RunConfig:
    """The same budget for every model; only the mixer (retention) or the trainer (xl) differ."""
    cfg = copy.deepcopy(base)
    if name == "retention":
        cfg.model.mixer = Choice("retention")
    cfg.data.cache_dir = cfg.data.cache_dir or str(out / "data")
    return cfg


def token_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Next-token cross entropy per position: logits (B, T, V), y (B, T) -> (B, T)."""
    return F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")


@torch.no_grad()
def score(row: str, model, x: torch.Tensor, y: torch.Tensor, L: int, sinks: int) -> torch.Tensor:
    """Per-position losses (B, N) of one row on windows x, y (B, N)."""
    model.eval()
    if row in ("full", "retention"):
        return token_losses(model(x).logits, y)
    if row == "sliding":
        original, model.pattern = model.pattern, SlidingWindow(L)
        try:
            return token_losses(model(x).logits, y)
        finally:
            model.pattern = original
    if row == "xl":
        memory = model.new_memory(L)
        return torch.cat(
            [
                token_losses(model(x[:, i : i + L], cache=memory).logits, y[:, i : i + L])
                for i in range(0, x.shape[1], L)
            ],
            dim=1,
        )
    return sink_losses(model, x, y, L, sinks)


def sink_losses(model, x, y, L: int, sinks: int) -> torch.Tensor:
    """Decode x token by token with sinks + a window of L - sinks (positions inside the cache)."""
    original, model.pattern = model.pattern, Sinks(sinks, max(L - sinks, 1))
    try:
        state = model.start_state(x.shape[0], x.shape[1])
        logits = []
        for t in range(x.shape[1]):
            out = model(x[:, t : t + 1], cache=state.cache, start=t)
            logits.append(out.logits)
        return token_losses(torch.cat(logits, dim=1), y)
    finally:
        model.pattern = original


def buckets(losses: list[float], L: int) -> list[tuple[str, float]]:
    """Mean loss over [0, L), [L, 2L), [2L, 4L), ... up to the length scored."""
    out, lo, hi = [], 0, L
    while lo < len(losses):
        part = losses[lo:hi]
        out.append((f"{lo}-{min(hi, len(losses)) - 1}", sum(part) / len(part)))
        lo, hi = hi, 2 * hi
    return out


def write_table(results: dict, path: Path) -> str:
    rows = results["rows"]
    names = [b for b, _ in next(iter(rows.values()))["buckets"]]
    lines = [
        "| row | " + " | ".join(f"pos {n}" for n in names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for row, r in rows.items():
        lines.append(f"| {row} | " + " | ".join(f"{v:.3f}" for _, v in r["buckets"]) + " |")
    table = "\n".join(lines) + "\n"
    path.write_text(table)
    return table


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = results["context"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row, r in results["rows"].items():
        per = r["per_position"]
        chunks = [sum(per[i : i + L]) / len(per[i : i + L]) for i in range(0, len(per), L)]
        ax.plot([(i + 1) * L for i in range(len(chunks))], chunks, marker="o", ms=3, label=row)
    ax.axvline(L, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(f"position (end of each stretch of L = {L} tokens)")
    ax.set_ylabel("validation loss (nats / token)")
    ax.set_title("Loss by position, trained at L")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def main(args) -> int:
    base = resolve_config(args)
    out = out_folder(args.out)
    L = base.model.context
    if not relative_positions(base.model):
        raise ConfigError(
            f"long-context needs relative positions (sinks, XL); model.pos is {base.model.pos.kind}"
        )
    if args.sinks >= L:
        raise ConfigError(f"--sinks ({args.sinks}) must be below model.context ({L})")
    N = args.factor * L
    results = {
        "context": L,
        "factor": args.factor,
        "rows": {},
        "train": {},
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "base": to_dict(base),
    }
    models = {}
    for name in MODELS:
        cfg = model_config(base, name, out)
        extra = {"segments": args.segments} if name == "xl" else {}
        t0 = time.perf_counter()
        trainer = (SegmentTrainer if name == "xl" else Trainer)(
            cfg, out / name, log=lambda *a: None, progress=False, overwrite=True, **extra
        )
        last = trainer.fit()
        results["train"][name] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "val_loss": last.get("val_loss"),
        }
        models[name] = trainer.model
        val = trainer.data.val
    if len(val) < args.windows * N + 1:
        raise ConfigError(
            f"the validation split has {len(val)} tokens; {args.windows * N + 1} needed "
            "(lower --windows, --factor or model.context, or give more text with --data)"
        )
    data = torch.as_tensor(val[: args.windows * N + 1].astype("int64"))
    x, y = data[:-1].view(args.windows, N), data[1:].view(args.windows, N)  # (W, N)
    owner = {
        "full": "attention",
        "sliding": "attention",
        "sinks": "attention",
        "xl": "xl",
        "retention": "retention",
    }
    for row in ROWS:
        model = models[owner[row]]
        per = (
            score(
                row,
                model,
                x.to(next(model.parameters()).device),
                y.to(next(model.parameters()).device),
                L,
                args.sinks,
            )
            .mean(0)
            .tolist()
        )
        results["rows"][row] = {"per_position": per, "buckets": buckets(per, L)}
        print(
            f"{row:>10}: " + ", ".join(f"{n} {v:.3f}" for n, v in results["rows"][row]["buckets"]),
            flush=True,
        )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = write_table(results, out / "table.md")
    plot(results, out / "loss_by_position.png")
    print(
        "\n"
        + table
        + f"\nwritten: {out / 'results.json'}, {out / 'table.md'}, {out / 'loss_by_position.png'}"
    )
    return 0
