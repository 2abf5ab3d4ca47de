"""What the G2P experiments share (g2p-sampling, g2p-guided, g2p-alignment, g2p-rl): their flags,
training one variant in the one loop (Seq2SeqTrainer), test WER overall and on long words, and
writing OUT/table.md, OUT/results.json and OUT/NAME.png.

Not here: anything an experiment varies (each module says its axis), and model code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import to_dict
from ..metrics import per, wer
from ..programs import config_flags, positive_int, short
from ..seq2seq import Seq2SeqTrainer
from ..tasks import g2p
from .plots import figure, save  # noqa: F401 (the G2P experiments' figures)

LONG = 10  # a long word has more than LONG letters


def add_common(p, preset: str, out: str) -> None:
    """--preset / --config / --set (the base G2P run), --out, --limit, --no-progress."""
    config_flags(p, preset=preset, data=False)
    p.add_argument(
        "--out",
        default=out,
        help=f"where the runs, table.md, results.json and the plot go (default {out})",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="test on the first N test words (md5 order) only; default all",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_variant(
    cfg: g2p.G2PConfig,
    out: Path,
    data: g2p.G2PData,
    progress: bool,
    dev_metric: Callable | None = None,
) -> Seq2SeqTrainer:
    """Train one variant into `out` (a re-run replaces it); `dev_metric(model) -> dict` is logged
    at every evaluation (metrics.jsonl and the trainer's history)."""
    trainer = Seq2SeqTrainer(
        cfg,
        data.vocab,
        data.pairs("train"),
        data.pairs("dev"),
        out,
        progress=progress,
        log=lambda *a, **k: None,
        dev_metric=dev_metric,
        overwrite=True,
    )
    trainer.fit()
    trainer.model.eval()
    return trainer


def test_wer(
    model, data: g2p.G2PData, cfg: g2p.G2PConfig, limit: int | None, beam: int = 1
) -> dict:
    """Test WER / PER on all words and on the long ones (more than LONG letters; None when the
    words tested hold none)."""
    limit = short("words", limit)  # TFMR_DOCS_SHORT: a few test words
    r = g2p.evaluate(
        model, data, "test", beam, cfg.decode.max_len, cfg.decode.batch_size, limit=limit
    )
    refs = data.splits["test"]
    long_words = [w for w in r["predictions"] if len(w) > LONG]
    long = {"wer": None, "per": None}
    if long_words:
        hyps, gold = (
            [r["predictions"][w] for w in long_words],
            [[list(p) for p in refs[w]] for w in long_words],
        )
        long = {"wer": wer(hyps, gold), "per": per(hyps, gold)}
    return {
        "wer": r["wer"],
        "per": r["per"],
        "words": r["words"],
        "long_wer": long["wer"],
        "long_per": long["per"],
        "long_words": len(long_words),
    }


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def markdown(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def write(
    out: Path, name: str, title: str, table: str, results: dict, args, base: g2p.G2PConfig | None
) -> None:
    """OUT/table.md (title and table), OUT/results.json (flags, base config, results)."""
    (out / "table.md").write_text(f"## {title}\n\n{table}\n")
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    record = {
        "experiment": name,
        "title": title,
        "args": settings,
        "base": None if base is None else to_dict(base),
        "results": results,
    }
    (out / "results.json").write_text(json.dumps(record, indent=1))
    print(
        f"\n{title}\n{table}\ntable: {out / 'table.md'}  results: {out / 'results.json'}  "
        f"plot: {out / (name + '.png')}"
    )
