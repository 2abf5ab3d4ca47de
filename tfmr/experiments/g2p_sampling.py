"""Teacher forcing vs scheduled sampling (three kinds) on G2P: test WER overall and on long words.

    tfmr experiment g2p-sampling --out runs/g2p-sampling     # g2p-small's model, 300 steps each
    tfmr experiment g2p-sampling --preset g2p-tiny --set train.steps=20 --limit 200   # a smoke run

The base run is the preset `exp-g2p-sampling` through --preset / --config / --set; only
train.objective varies, each variant trained the same number of steps from the same seed:

    teacher-forcing   the gold prefix
    scheduled         Bengio et al. 2015, arg-max predictions, inverse-sigmoid schedule
    two-pass          Mihaylova & Martins 2019, softmax-mixed embeddings, the same schedule
    parallel          Duckworth et al. 2019, 2 passes of sampled tokens, the same schedule

The schedule is eps_i = k / (k + exp(i / k)) with k = steps / 5 (--k to change), so the gold
share falls from about 1 to k / (k + e^5) (0.29 at 300 steps) by the last step. Test WER is greedy,
on all test words and on those of more than 10 letters. Writes OUT/table.md, OUT/results.json,
OUT/g2p-sampling.png and each variant's run folder.
"""

from __future__ import annotations

import copy

from ..config import Choice, ConfigError
from ..programs import out_folder, resolve_config, short
from ..tasks import g2p
from .g2p_common import (
    LONG,
    add_common,
    figure,
    markdown,
    pct,
    save,
    test_wer,
    train_variant,
    write,
)

KINDS = ("teacher-forcing", "scheduled", "two-pass", "parallel")


def variants(steps: int, k: float | None) -> dict[str, Choice]:
    k = max(1.0, steps / 5) if k is None else k
    schedule = {"schedule": "inverse-sigmoid", "k": k}
    return {
        "teacher-forcing": Choice("teacher-forcing"),
        "scheduled": Choice("scheduled", **schedule),
        "two-pass": Choice("two-pass", **schedule),
        "parallel": Choice("parallel", **schedule),
    }


def add_arguments(p) -> None:
    add_common(p, "exp-g2p-sampling", "runs/g2p-sampling")
    p.add_argument(
        "--k",
        type=float,
        default=None,
        help="the inverse-sigmoid schedule's k (default train.steps / 5)",
    )
    p.add_argument(
        "--only", nargs="+", default=None, choices=KINDS, help=f"a subset of: {' '.join(KINDS)}"
    )


def plot(results: list[dict], path, title: str):
    plt, fig, ax = figure()
    names = [r["name"] for r in results]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [100 * r["wer"] for r in results], 0.4, label="all test words")
    ax.bar(
        [i + 0.2 for i in x],
        [100 * (r["long_wer"] or 0) for r in results],
        0.4,
        label=f"> {LONG} letters",
    )
    ax.set_xticks(list(x), names)
    ax.set_ylabel("test WER (%), greedy")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(
        0, 1.2 * max(100 * max(r["wer"], r["long_wer"] or 0) for r in results)
    )  # room for the legend
    ax.legend(loc="upper center", ncol=2)
    return save(fig, path)


def main(args) -> int:
    base = resolve_config(args, g2p.G2PConfig)
    if args.k is not None and args.k < 1:
        raise ConfigError(f"--k must be at least 1 (the inverse-sigmoid schedule), got {args.k}")
    out = out_folder(args.out)
    data = g2p.load_data(base.data.stress)
    chosen = {
        n: c
        for n, c in variants(base.train.steps, args.k).items()
        if args.only is None or n in args.only
    }
    chosen = dict(list(chosen.items())[: short("variants", len(chosen))])  # TFMR_DOCS_SHORT
    results, rows = [], []
    for name, objective in chosen.items():
        print(f"training {name} ({objective}) ...", flush=True)
        cfg = copy.deepcopy(base)
        cfg.train.objective = objective
        trainer = train_variant(cfg, out / name, data, not args.no_progress)
        r = {
            "name": name,
            "objective": objective.to_dict(),
            "steps": trainer.step,
            "train_seconds": trainer.seconds,
            **test_wer(trainer.model, data, cfg, args.limit),
        }
        results.append(r)
        rows.append(
            [
                name,
                r["steps"],
                pct(r["wer"]),
                pct(r["per"]),
                pct(r["long_wer"]),
                r["long_words"],
                f"{r['train_seconds']:.0f}",
            ]
        )
        print(markdown(HEADER, rows[-1:]).splitlines()[-1], flush=True)
    m, t = base.model, base.train
    title = (
        f"teacher forcing vs scheduled sampling, G2P, {m.layers}+{m.encoder_layers} layers x dim {m.dim}, "
        f"{t.steps} steps, {results[0]['words']:,} test words"
    )
    plot(results, out / "g2p-sampling.png", title)
    write(out, "g2p-sampling", title, markdown(HEADER, rows), results, args, base)
    return 0


HEADER = (
    "objective",
    "steps",
    "test WER",
    "test PER",
    f"WER > {LONG} letters",
    "long words",
    "train s",
)
