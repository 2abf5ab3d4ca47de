"""Pictures of positions, attention and training losses, as PNG files (matplotlib, Agg backend).

    positions(out_dir)                 sinusoidal.png  the sin/cos table, position x dimension
                                       rope.png        RoPE angles per frequency pair, and the score of
                                                       q = k = ones against distance (RoPE, xPos)
                                       alibi.png       ALiBi's causal bias matrix for several heads
    attention_maps(model, ids, out)    one PNG per layer: a grid of heads, query x key weights
    plot_losses(history, path)         loss.png: the training loss per step and every evaluation
                                       loss (the training loop writes it at the end of a run)

`tfmr viz positions` and `tfmr viz attention --checkpoint DIR --text ...` call these. Attention
maps need weights, so the model runs under `kernels.eager_attention` (same math, and the eager
kernel returns the weights) for the picture. Perplexity curves are drawn by the experiments.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .kernels import eager_attention
from .masks import Mask
from .positions import Alibi, Rope, XPos, sinusoid_table


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sinusoidal_png(path: Path, length: int = 128, dim: int = 64) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    im = ax.imshow(
        sinusoid_table(length, dim).T.numpy(),
        aspect="auto",
        cmap="RdBu",
        vmin=-1,
        vmax=1,
        origin="lower",
        interpolation="nearest",
    )
    ax.set_xlabel("position")
    ax.set_ylabel("dimension (even: sin, odd: cos)")
    ax.set_title(f"Sinusoidal positions (dim {dim})")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rope_png(path: Path, length: int = 128, head_dim: int = 64) -> Path:
    """Left: cos of the rotation angle of each frequency pair at each position. Right: the score
    q_m . k_n for q = k = ones against m - n, which decays with distance (RoFormer section 3.4.3);
    xPos adds an explicit exponential decay."""
    plt = _plt()
    rope = Rope(head_dim, length)
    cos, _, _ = rope.tables(0, length, "cpu")  # (T, D)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    im = a.imshow(
        cos[:, : head_dim // 2].T.numpy(),
        aspect="auto",
        cmap="RdBu",
        vmin=-1,
        vmax=1,
        origin="lower",
        interpolation="nearest",
    )
    a.set_xlabel("position")
    a.set_ylabel("frequency pair i (angle = pos * base^(-2i/d))")
    a.set_title("RoPE: cos(angle)")
    fig.colorbar(im, ax=a)
    far = 4 * length
    ones = torch.ones(1, 1, 1, head_dim)
    for scheme, label in (
        (rope, "RoPE"),
        (XPos(head_dim, length, scale_base=length), f"xPos (scale_base {length})"),
    ):
        q, _ = scheme.rotate(ones.expand(1, 1, far, head_dim), ones.expand(1, 1, far, head_dim), 0)
        _, k0 = scheme.rotate(ones, ones, 0)
        b.plot((q[0, 0] @ k0[0, 0, 0]).numpy() / head_dim, label=label)
    b.set_xlabel("relative distance m - n")
    b.set_ylabel("q_m . k_n / d   (q = k = ones)")
    b.set_title("Scores decay with distance")
    b.legend()
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def alibi_png(path: Path, length: int = 32, heads: int = 8) -> Path:
    plt = _plt()
    alibi = Alibi(heads)
    mask = Mask(causal=True)
    bias = alibi.bias(length, length).dense(mask, length, length, "cpu", torch.float32)  # (H, T, T)
    bias = bias.masked_fill(~mask.dense(length, length, "cpu")[0], float("nan"))
    shown = [0, 1, heads // 2, heads - 1]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4))
    for ax, h in zip(axes, shown):
        im = ax.imshow(bias[h].numpy(), cmap="viridis", interpolation="nearest")
        ax.set_title(f"head {h + 1}: slope {alibi.slopes[h].item():.4g}")
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"ALiBi bias -slope * (i - j), {heads} heads (masked: future)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def positions(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        sinusoidal_png(out / "sinusoidal.png"),
        rope_png(out / "rope.png"),
        alibi_png(out / "alibi.png"),
    ]


@torch.no_grad()
def attention_weights(model, ids: torch.Tensor) -> list[torch.Tensor]:
    """Per layer (B, H, T, T) self-attention weights, computed with the eager kernel; of a model
    that reads a source (encoder-decoder), its encoder's over `ids` as the source."""
    with eager_attention(model):
        model.eval()
        if model.needs_source:
            return model.encode_with_attention(ids)[2]
        return model(ids).attentions


def attention_maps(
    model, ids: torch.Tensor, out_dir: str | Path, labels: list[str] | None = None
) -> list[Path]:
    """layer_<i>.png for each layer: a grid of its heads' weights for the first sequence of `ids`."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, w in enumerate(attention_weights(model, ids)):
        heads = w.shape[1]
        cols = min(heads, 4)
        rows = math.ceil(heads / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
        for h in range(rows * cols):
            ax = axes[h // cols][h % cols]
            if h >= heads:
                ax.axis("off")
                continue
            ax.imshow(w[0, h].float().numpy(), cmap="magma", vmin=0, interpolation="nearest")
            ax.set_title(f"layer {i} head {h}", fontsize=9)
            if labels is not None and len(labels) <= 48:
                ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=90)
                ax.set_yticks(range(len(labels)), labels, fontsize=6)
        fig.tight_layout()
        path = out / f"layer_{i}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_losses(history: list[dict], path: Path) -> Path | None:
    """Training loss per step and every evaluation loss (keys ending in _loss), as a PNG."""
    if not history:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [
        r for r in history if "loss" in r
    ]  # an evaluation before step 1 (train.keep_best) has none
    ax.plot(
        [r["step"] for r in steps],
        [r["loss"] for r in steps],
        lw=0.8,
        alpha=0.6,
        label="train (batch)",
    )
    names = sorted(
        {k for r in history for k in r if k.endswith("_loss")}
    )  # train_loss, val_loss, dev_loss
    for name in names:
        evals = [r for r in history if name in r]
        ax.plot(
            [r["step"] for r in evals], [r[name] for r in evals], "o-", label=name.replace("_", " ")
        )
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
