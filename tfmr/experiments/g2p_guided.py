"""Steps until the cross-attention is diagonal, with and without the guided attention loss (G2P).

    tfmr experiment g2p-guided --out runs/g2p-guided     # g2p-small's model (eager kernel), 500 steps each
    tfmr experiment g2p-guided --preset g2p-tiny --set model.kernel=eager --set train.steps=20 --limit 200

The base run is the preset `exp-g2p-guided` through --preset / --config / --set; only
train.guided_attention varies: 0 (off) and --weight (default 1.0), same seed, same steps.

The measure (docs/objectives.md, "How diagonal is the attention"): at every evaluation
(train.eval_every), the first --words dev words (md5 order) are read teacher-forced with their
first reference pronunciation; their cross-attention, averaged over the layers and heads the guided
loss acts on (train.guided_layers, train.guided_heads), gives each word's *diagonal share* (the mean
over its target positions t of the attention mass on source positions n with |n/N - t/T| <= --band,
tfmr.objectives.diagonal_share); the run's share is the mean over the words. "Steps until
diagonal" is the first evaluated step whose share is at least --threshold. Writes OUT/table.md,
OUT/results.json, OUT/g2p-guided.png (share vs step) and each variant's run folder.
"""

from __future__ import annotations

import copy

import torch

from ..config import ConfigError
from ..objectives import GuidedAttention, diagonal_share
from ..programs import out_folder, resolve_config, short
from ..seq2seq import PAD, collate, eager_attention
from ..tasks import g2p
from .g2p_common import add_common, figure, markdown, pct, save, test_wer, train_variant, write


def add_arguments(p) -> None:
    add_common(p, "exp-g2p-guided", "runs/g2p-guided")
    p.add_argument(
        "--weight",
        type=float,
        default=1.0,
        help="train.guided_attention of the guided run (default 1.0)",
    )
    p.add_argument(
        "--band",
        type=float,
        default=0.1,
        help="the diagonal band |n/N - t/T| <= band (default 0.1)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="diagonal when the dev words' mean diagonal share reaches this (default 0.5)",
    )
    p.add_argument(
        "--words", type=int, default=200, help="dev words the share is measured on (default 200)"
    )


def diagonality(data: g2p.G2PData, cfg: g2p.G2PConfig, words: int, band: float):
    """A dev_metric for the trainer: {"diagonal_share": mean over the dev words}."""
    chosen = sorted(data.splits["dev"], key=g2p.md5_key)[:words]
    pairs = [
        (data.vocab.src.encode(w), data.vocab.tgt.encode(data.splits["dev"][w][0])) for w in chosen
    ]
    t = cfg.train

    @torch.no_grad()
    def metric(model) -> dict:
        where = GuidedAttention(1.0, t.guided_sigma, t.guided_layers, t.guided_heads)
        batch = collate(pairs, next(model.parameters()).device)
        with eager_attention(model):
            where.setup(model)  # the layers and heads the guided loss reads
            out = model(batch["src_ids"], batch["tgt_ids"])
        A = torch.stack(
            [out.cross_attentions[i][:, where.heads] for i in where.layers], 1
        )  # (B, L, h, T, S)
        share = diagonal_share(
            A.float().mean((1, 2)),
            (batch["src_ids"] != PAD).sum(1),
            (batch["targets"] != -100).sum(1),
            band,
        )  # (B,)
        return {"diagonal_share": float(share.mean())}

    return metric


def steps_until(curve: list[tuple[int, float]], threshold: float) -> int | None:
    return next((step for step, share in curve if share >= threshold), None)


def plot(results: list[dict], path, title: str, threshold: float):
    plt, fig, ax = figure()
    for r in results:
        ax.plot([s for s, _ in r["curve"]], [v for _, v in r["curve"]], "o-", ms=3, label=r["name"])
    ax.axhline(threshold, color="gray", ls="--", lw=0.8, label=f"threshold {threshold}")
    ax.set_xlabel("step")
    ax.set_ylabel("diagonal share of cross-attention (dev)")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend()
    return save(fig, path)


def main(args) -> int:
    base = resolve_config(args, g2p.G2PConfig)
    if not (0 < args.band < 1 and 0 < args.threshold <= 1 and args.words >= 1 and args.weight > 0):
        raise ConfigError(
            "--band must be in (0, 1), --threshold in (0, 1], --words at least 1, --weight positive"
        )
    out = out_folder(args.out)
    args.words = short("words", args.words)  # TFMR_DOCS_SHORT: the share on a few dev words
    data = g2p.load_data(base.data.stress)
    metric = diagonality(data, base, args.words, args.band)
    results, rows = [], []
    for name, weight in (("without", 0.0), ("with guided loss", args.weight)):
        print(f"training {name} (train.guided_attention={weight}) ...", flush=True)
        cfg = copy.deepcopy(base)
        cfg.train.guided_attention = weight
        trainer = train_variant(
            cfg, out / name.split()[0], data, not args.no_progress, dev_metric=metric
        )
        curve = [(r["step"], r["diagonal_share"]) for r in trainer.history if "diagonal_share" in r]
        reached = steps_until(curve, args.threshold)
        r = {
            "name": name,
            "guided_attention": weight,
            "curve": curve,
            "steps_until_diagonal": reached,
            "final_share": curve[-1][1],
            **test_wer(trainer.model, data, cfg, args.limit),
        }
        results.append(r)
        rows.append(
            [
                name,
                "not reached" if reached is None else reached,
                f"{r['final_share']:.3f}",
                pct(r["wer"]),
                pct(r["per"]),
            ]
        )
        print(markdown(HEADER, rows[-1:]).splitlines()[-1], flush=True)
    m, t = base.model, base.train
    title = (
        f"guided attention loss, G2P, {m.layers}+{m.encoder_layers} layers x dim {m.dim}, {t.steps} steps, "
        f"share measured every {t.eval_every} steps on {args.words} dev words, band {args.band}, "
        f"threshold {args.threshold}"
    )
    plot(results, out / "g2p-guided.png", title, args.threshold)
    write(out, "g2p-guided", title, markdown(HEADER, rows), results, args, base)
    return 0


HEADER = ("run", "steps until diagonal", "final diagonal share", "test WER", "test PER")
