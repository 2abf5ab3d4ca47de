"""Degeneration metrics, and the comparison of decoding strategies behind `tfmr lm eval decoding`.

Holtzman et al. 2019, "The Curious Case of Neural Text Degeneration" (https://arxiv.org/abs/1904.09751),
measure how text decoded from a language model differs from human text. Over a set of
generations (lists of token ids):

    repetition(gens)        share of generations that END in a repeating loop, by the paper's
                            rule: the phrase of n <= 90 tokens repeated the most times at the end
                            repeats at least twice, and is at least 3 tokens long or repeats > 50 times
    self_bleu(gens)         mean BLEU-4 of each generation against all the others as references
                            (Zhu et al. 2018, https://arxiv.org/abs/1802.01886): high = alike
    zipf_coefficient(gens)  minus the slope of log frequency against log rank of the tokens
                            (human text about 0.93 in the paper; steeper = fewer distinct tokens)
    distinct_n(gens, n)     distinct n-grams / all n-grams (Li et al. 2016, https://arxiv.org/abs/1510.03055)

Self-BLEU is sacrebleu's sentence BLEU with `tokenize="none"`, floor smoothing 0.1 (NLTK's
method 1, the paper's choice) and no effective order, computed here in one pass over n-gram
counts (tests check it against sacrebleu). `compare_strategies` decodes held-out prompts with each
strategy and scores the continuations, with the real continuations as the "human" row.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .decode import check_decoding
from .metrics import bleu_from_stats

Generations = list  # list[list[int]]


# --------------------------------------------------------------------------- repetition
@dataclass
class Loop:
    phrase: list  # the repeated tokens
    times: int  # how many times they repeat at the end


def ending_loop(
    tokens: list, max_n: int = 90, min_phrase: int = 3, long_run: int = 50
) -> Loop | None:
    """The loop a generation ends in, or None. For each phrase length n <= max_n count how many
    times the last n tokens repeat back to back at the end; take the n with the most repeats
    (the shortest on ties). It is a loop when it repeats at least twice and the phrase has at
    least `min_phrase` tokens, or it repeats more than `long_run` times."""
    best_n, best_times = 0, 0
    for n in range(1, min(max_n, len(tokens)) + 1):
        tail = tokens[len(tokens) - n :]
        times = 1
        while (times + 1) * n <= len(tokens) and tokens[
            len(tokens) - (times + 1) * n : len(tokens) - times * n
        ] == tail:
            times += 1
        if times > best_times:
            best_n, best_times = n, times
    if best_times > 1 and (best_n >= min_phrase or best_times > long_run):
        return Loop(list(tokens[len(tokens) - best_n :]), best_times)
    return None


def repetition(gens: Generations, **rule) -> float:
    """Share (0..1) of generations that end in a repeating loop (see `ending_loop`)."""
    return sum(ending_loop(list(g), **rule) is not None for g in gens) / max(1, len(gens))


# --------------------------------------------------------------------------- self-BLEU
def _ngrams(tokens: list, n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _best_two(counts: list[Counter]) -> dict:
    """n-gram -> (highest count, the generation holding it, second highest count)."""
    best: dict = {}
    for doc, counter in enumerate(counts):
        for gram, c in counter.items():
            top, who, second = best.get(gram, (0, -1, 0))
            if c > top:
                best[gram] = (c, doc, top)
            elif c > second:
                best[gram] = (top, who, c)
    return best


def _closest_other_length(lengths: list[int], i: int) -> int:
    """The reference length BLEU uses: the other generations' length closest to gens[i]'s
    (the shorter one on ties)."""
    hyp = lengths[i]
    others = lengths[:i] + lengths[i + 1 :]
    return min(others, key=lambda r: (abs(r - hyp), r))


def self_bleu(
    gens: Generations, max_n: int = 4, sample: int | None = 1000, seed: int = 0, floor: float = 0.1
) -> float:
    """Mean BLEU-`max_n` of (a sample of) the generations, each against all the others."""
    gens = [list(g) for g in gens]
    if len(gens) < 2:
        raise ValueError("self-BLEU needs at least two generations")
    counts = {n: [_ngrams(g, n) for g in gens] for n in range(1, max_n + 1)}
    best = {n: _best_two(counts[n]) for n in counts}
    lengths = [len(g) for g in gens]
    chosen = list(range(len(gens)))
    if sample is not None and sample < len(gens):
        chosen = random.Random(seed).sample(chosen, sample)
    scores = []
    for i in chosen:
        correct, total = [], []
        for n in range(1, max_n + 1):
            hits = 0
            for gram, c in counts[n][i].items():
                top, who, second = best[n][gram]
                hits += min(c, second if who == i else top)
            correct.append(hits)
            total.append(max(0, lengths[i] - n + 1))
        ref_len = _closest_other_length(lengths, i)
        scores.append(
            bleu_from_stats(correct, total, lengths[i], ref_len, smooth="floor", floor=floor) / 100
        )
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------- Zipf, distinct-n
def zipf_coefficient(gens: Generations, top: int = 5000) -> float:
    """Minus the least-squares slope of log(count) on log(rank) over the `top` most frequent tokens."""
    counts = sorted(Counter(t for g in gens for t in g).values(), reverse=True)[:top]
    if len(counts) < 2:
        return float("nan")
    x = np.log(np.arange(1, len(counts) + 1, dtype=np.float64))
    y = np.log(np.asarray(counts, dtype=np.float64))
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return float(-slope)


def distinct_n(gens: Generations, n: int) -> float:
    """Distinct n-grams over all n-grams, pooled over the generations (0..1)."""
    grams = [tuple(g[i : i + n]) for g in gens for i in range(len(g) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


# --------------------------------------------------------------------------- strategies
@dataclass(frozen=True)
class Strategy:
    """One way to decode: beam search when beam_size > 1, greedy when temperature is 0, else
    sampling with the given filters."""

    name: str
    beam_size: int = 1
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition: float = 1.0
    ngram: int = 0


STRATEGY_KEYS = {
    "beam_size": int,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "repetition": float,
    "ngram": int,
}


def parse_strategy(spec: str) -> Strategy:
    """'greedy', or comma-separated key=value pairs, e.g. 'top_k=40,temperature=0.7', 'beam_size=4'."""
    spec = spec.strip()
    if spec == "greedy":
        return Strategy("greedy", temperature=0.0)
    options = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if key not in STRATEGY_KEYS or not value:
            raise ValueError(
                f"bad strategy {spec!r}: use 'greedy' or key=value pairs with keys "
                f"{', '.join(STRATEGY_KEYS)}"
            )
        try:
            options[key] = STRATEGY_KEYS[key](value)
        except ValueError:
            raise ValueError(
                f"bad strategy {spec!r}: {key} takes {STRATEGY_KEYS[key].__name__}, got {value!r}"
            ) from None
    s = Strategy(spec, **options)
    try:
        check_decoding(
            0, s.temperature, s.top_k, s.top_p, s.min_p, s.repetition, s.ngram, s.beam_size
        )
    except ValueError as e:
        raise ValueError(f"bad strategy {spec!r}: {e}") from None
    return s


# The rows of Holtzman et al.'s Table 1 that fit a CPU (their beam is 16 wide).
DEFAULT_STRATEGIES = (
    "greedy",
    "beam_size=4",
    "temperature=1.0",
    "temperature=0.9",
    "top_k=40",
    "top_k=40,temperature=0.7",
    "top_p=0.95",
)


@torch.no_grad()
def decode_with(
    model, prompts: torch.Tensor, new_tokens: int, s: Strategy, seed: int
) -> torch.Tensor:
    """The continuations (B, new_tokens) of `prompts` (B, P) under strategy `s`."""
    from .decode import beam_search, sample

    if s.beam_size > 1:
        ids = beam_search(
            model, prompts, s.beam_size, new_tokens, repetition=s.repetition, ngram=s.ngram
        )
    else:
        ids = sample(
            model,
            prompts,
            new_tokens,
            s.temperature,
            s.top_k,
            s.top_p,
            s.min_p,
            seed=seed,
            repetition=s.repetition,
            ngram=s.ngram,
        )
    return ids[:, prompts.shape[1] :]


@torch.no_grad()
def perplexity(model, prompts: torch.Tensor, continuations: torch.Tensor) -> float:
    """exp(mean NLL) the model gives the continuations after their prompts."""
    ids = torch.cat([prompts, continuations], dim=1)
    logits = (
        model(ids).logits[:, prompts.shape[1] - 1 : -1].float()
    )  # predictions of the continuation
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), continuations.flatten())
    return float(torch.exp(nll))


def score(gens: Generations) -> dict:
    """Every degeneration metric of a set of generations."""
    return {
        "repetition_pct": 100 * repetition(gens),
        "self_bleu4": self_bleu(gens),
        "zipf": zipf_coefficient(gens),
        "distinct_1": distinct_n(gens, 1),
        "distinct_2": distinct_n(gens, 2),
        "distinct_3": distinct_n(gens, 3),
    }


@dataclass
class Comparison:
    rows: list = field(default_factory=list)  # one dict per strategy: name, metrics, seconds
    examples: dict = field(default_factory=dict)  # strategy -> a few decoded continuations (text)
    setup: dict = field(default_factory=dict)


def held_out_windows(ids: np.ndarray, count: int, length: int, seed: int) -> torch.Tensor:
    """`count` windows of `length` tokens from `ids`, non-overlapping where the text allows."""
    if len(ids) < length:
        raise ValueError(
            f"the held-out text has {len(ids)} tokens; each prompt + continuation needs {length}"
        )
    slots = len(ids) // length
    rng = random.Random(seed)
    starts = (
        [k * length for k in rng.sample(range(slots), count)]
        if count <= slots
        else [rng.randrange(len(ids) - length + 1) for _ in range(count)]
    )
    return torch.tensor(np.stack([ids[s : s + length] for s in starts]).astype(np.int64))


def compare_strategies(
    model,
    windows: torch.Tensor,
    prompt_len: int,
    strategies: list[Strategy],
    decode_text=None,
    batch_size: int = 50,
    seed: int = 0,
    log=print,
) -> Comparison:
    """Decode the first `prompt_len` tokens of each window with every strategy; score the
    continuations, and the windows' real continuations as "human"."""
    import time

    model.eval()
    prompts, human = windows[:, :prompt_len], windows[:, prompt_len:]
    new = human.shape[1]
    cmp = Comparison(
        setup={
            "prompts": len(windows),
            "prompt_tokens": prompt_len,
            "new_tokens": new,
            "seed": seed,
        }
    )
    for s in [None] + list(strategies):
        t0 = time.perf_counter()
        if s is None:
            name, conts = "human", human
        else:
            name = s.name
            conts = torch.cat(
                [
                    decode_with(model, prompts[i : i + batch_size], new, s, seed + i)
                    for i in range(0, len(prompts), batch_size)
                ]
            )
        gens = conts.tolist()
        row = {
            "strategy": name,
            "perplexity": perplexity(model, prompts, conts),
            **score(gens),
            "seconds": time.perf_counter() - t0,
        }
        cmp.rows.append(row)
        if decode_text is not None:
            cmp.examples[name] = [decode_text(g) for g in gens[:3]]
        log(
            f"  {name:28s} repetition {row['repetition_pct']:6.2f}%  self-BLEU4 {row['self_bleu4']:.3f}  "
            f"Zipf {row['zipf']:.3f}  distinct-2 {row['distinct_2']:.3f}  ppl {row['perplexity']:.2f}"
        )
    return cmp


COLUMNS = [
    ("strategy", "strategy", "{}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("self_bleu4", "self-BLEU4", "{:.3f}"),
    ("zipf", "Zipf coef.", "{:.3f}"),
    ("repetition_pct", "repetition %", "{:.2f}"),
    ("distinct_1", "distinct-1", "{:.3f}"),
    ("distinct_2", "distinct-2", "{:.3f}"),
    ("distinct_3", "distinct-3", "{:.3f}"),
]


def markdown_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(fmt.format(r[key]) for key, _, fmt in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def plot(rows: list[dict], path: Path) -> Path:
    """Four bar charts (repetition, self-BLEU4, Zipf, distinct-2), the human value as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["strategy"] for r in rows]
    human = next((r for r in rows if r["strategy"] == "human"), None)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (key, title) in zip(
        axes.flat,
        [
            ("repetition_pct", "repetition % (ends in a loop)"),
            ("self_bleu4", "self-BLEU4 (lower = more diverse)"),
            ("zipf", "Zipf coefficient"),
            ("distinct_2", "distinct-2"),
        ],
    ):
        ax.bar(
            range(len(rows)),
            [r[key] for r in rows],
            color=["#888" if n == "human" else "#3b75af" for n in names],
        )
        if human is not None:
            ax.axhline(human[key], color="#c44", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(cmp: Comparison, out: Path) -> dict:
    """decoding.md (table), decoding.json (everything), decoding.png (plot) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(cmp.rows)
    (out / "decoding.md").write_text(table + "\n", encoding="utf-8")
    (out / "decoding.json").write_text(
        json.dumps(asdict(cmp), indent=2, ensure_ascii=False), encoding="utf-8"
    )
    plot(cmp.rows, out / "decoding.png")
    return {
        "table": out / "decoding.md",
        "json": out / "decoding.json",
        "plot": out / "decoding.png",
    }
