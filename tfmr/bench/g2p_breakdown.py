"""Where two G2P systems lose words, side by side: the error breakdown of `tfmr bench g2p --peer NAME`.

    breakdown(words, refs, first, second)   pure: WER of each system on words with and without an
                                            apostrophe and by length (letters, apostrophes not
                                            counted: <=4, 5-7, 8-10, 11+), the words only the first
                                            misses, only the second, both (and how many of those
                                            with the same answer), the WER if a word counted right
                                            when either is right (the oracle), and a few examples
    lines(b, names)                         that breakdown as text for the terminal
    markdown(b, names)                      the same as markdown tables
    plot(b, names, path)                    WER by group, two bars per group (a PNG)

A word is right when its prediction equals any of its references (tfmr.metrics.wer). Left out:
per-phoneme confusions, and more than two systems at once (call it once per pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..metrics import closest_reference

BUCKETS = (
    (None, 4, "<=4 letters"),
    (5, 7, "5-7 letters"),
    (8, 10, "8-10 letters"),
    (11, None, "11+ letters"),
)
MISSES = (
    ("only_first", "only {0} misses"),
    ("only_second", "only {1} misses"),
    ("both", "both miss"),
)


def letters(word: str) -> int:
    """The letters of `word`, apostrophes not counted."""
    return sum(c != "'" for c in word)


def length_group(word: str) -> str:
    n = letters(word)
    return next(
        name for lo, hi, name in BUCKETS if (lo is None or n >= lo) and (hi is None or n <= hi)
    )


def _group_row(name: str, idx: list[int], wrong_a: list[bool], wrong_b: list[bool]) -> dict:
    n = len(idx)
    return {
        "group": name,
        "words": n,
        "wer": [
            sum(wrong_a[i] for i in idx) / n if n else None,
            sum(wrong_b[i] for i in idx) / n if n else None,
        ],
    }


def breakdown(
    words: Sequence[str], refs: Sequence, first: Sequence, second: Sequence, examples: int = 5
) -> dict:
    """The breakdown of two systems' predictions (`first`, `second`: one phoneme list per word) on
    `words` with `refs` (a list of reference pronunciations per word). Returns
    {"words", "wer": [first, second], "groups": [{"group", "words", "wer": [first, second]}],
     "misses": {"only_first", "only_second", "both", "both_same", "oracle_wer"},
     "examples": {"only_first" | "only_second" | "both": [{"word", "first", "second", "reference"}]}};
    a group's WER is None when it has no words."""
    if not (len(words) == len(refs) == len(first) == len(second)) or not words:
        raise ValueError(
            f"breakdown needs as many references and predictions as words, and some words "
            f"({len(words)}, {len(refs)}, {len(first)}, {len(second)})"
        )
    rs = [[list(p) for p in r] for r in refs]
    wrong_a = [list(h) not in r for h, r in zip(first, rs)]
    wrong_b = [list(h) not in r for h, r in zip(second, rs)]
    everyone = range(len(words))
    groups = [
        _group_row("all words", list(everyone), wrong_a, wrong_b),
        _group_row(
            "with an apostrophe", [i for i in everyone if "'" in words[i]], wrong_a, wrong_b
        ),
        _group_row("without", [i for i in everyone if "'" not in words[i]], wrong_a, wrong_b),
    ]
    groups += [
        _group_row(name, [i for i in everyone if length_group(words[i]) == name], wrong_a, wrong_b)
        for _, _, name in BUCKETS
    ]
    kinds = {
        "only_first": [i for i in everyone if wrong_a[i] and not wrong_b[i]],
        "only_second": [i for i in everyone if wrong_b[i] and not wrong_a[i]],
        "both": [i for i in everyone if wrong_a[i] and wrong_b[i]],
    }
    misses = {k: len(v) for k, v in kinds.items()}
    misses["both_same"] = sum(list(first[i]) == list(second[i]) for i in kinds["both"])
    misses["oracle_wer"] = misses["both"] / len(words)
    shown = {
        k: [
            {
                "word": words[i],
                "first": " ".join(first[i]),
                "second": " ".join(second[i]),
                "reference": " ".join(
                    closest_reference(list(first[i] if wrong_a[i] else second[i]), rs[i])[1]
                ),
            }
            for i in v[:examples]
        ]
        for k, v in kinds.items()
    }
    return {
        "words": len(words),
        "wer": groups[0]["wer"],
        "groups": groups,
        "misses": misses,
        "examples": shown,
    }


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def lines(b: dict, names: Sequence[str]) -> list[str]:
    """The breakdown as terminal lines: a WER table by group, the misses, a few examples of each."""
    width = max(14, *(len(n) for n in names))
    out = [f"{'WER by group':<28} {'words':>7} {names[0]:>{width}} {names[1]:>{width}}"]
    for g in b["groups"]:
        out.append(
            f"  {g['group']:<26} {g['words']:>7,} {_pct(g['wer'][0]):>{width}} {_pct(g['wer'][1]):>{width}}"
        )
    m = b["misses"]
    out.append(
        f"words only {names[0]} misses: {m['only_first']:,}; only {names[1]} misses: {m['only_second']:,}; "
        f"both miss: {m['both']:,} ({m['both_same']:,} of them with the same answer)"
    )
    out.append(
        f"right when either is right (oracle): WER {_pct(m['oracle_wer'])} of {b['words']:,} words"
    )
    for key, title in MISSES:
        if b["examples"][key]:
            out.append(title.format(*names) + ", e.g.:")
        for e in b["examples"][key]:
            out.append(
                f"  {e['word']:<18} {names[0]}: {e['first']:<26} {names[1]}: {e['second']:<26} "
                f"reference: {e['reference']}"
            )
    return out


def markdown(b: dict, names: Sequence[str]) -> str:
    """The breakdown as markdown: the WER table by group, then the misses."""
    rows = [f"| group | words | {names[0]} WER | {names[1]} WER |", "|---|---|---|---|"]
    rows += [
        f"| {g['group']} | {g['words']:,} | {_pct(g['wer'][0])} | {_pct(g['wer'][1])} |"
        for g in b["groups"]
    ]
    m = b["misses"]
    rows += ["", "| words | count |", "|---|---|"]
    rows += [f"| {title.format(*names)} | {m[key]:,} |" for key, title in MISSES]
    rows += [
        f"| both miss with the same answer | {m['both_same']:,} |",
        f"| right when either is right (oracle WER) | {_pct(m['oracle_wer'])} |",
    ]
    return "\n".join(rows) + "\n"


def plot(b: dict, names: Sequence[str], path: Path) -> Path:
    """WER by group (apostrophe or not, length), two bars per group; written to `path` (PNG)."""
    from ..experiments.plots import figure, save

    groups = [g for g in b["groups"] if g["words"]]
    plt, fig, ax = figure(width=8.0)
    for k, name in enumerate(names[:2]):
        xs = [i + (k - 0.5) * 0.38 for i in range(len(groups))]
        ax.bar(xs, [100 * g["wer"][k] for g in groups], width=0.38, label=name)
    ax.set_xticks(
        range(len(groups)), [f"{g['group']}\n({g['words']:,})" for g in groups], fontsize=8
    )
    ax.set_ylabel("WER (%)")
    ax.set_title(
        f"G2P word error rate by group ({b['words']:,} test words; right when equal to any reference)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)
