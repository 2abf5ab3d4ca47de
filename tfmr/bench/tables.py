"""`tfmr bench tables`: one command regenerates the CPU tables of docs/benchmarks.md.

    tfmr bench tables [--only NAME[,NAME]] [--quick] [--data PATH] [--nanogpt DIR]
                      [--doc docs/benchmarks.md] [--dry-run]

Each section below runs one benchmark in its own process (`tfmr bench NAME ...`, so one bench's
threads and compile settings do not reach the next), each measuring tfmr beside its peer in the
same run, then its table replaces what stands in --doc between `<!-- bench:NAME start -->` and
`<!-- bench:NAME end -->`; nothing outside the markers changes. Each table is headed by the
machine (CPU model, native bf16, threads, the load average at the start and the end of that bench,
torch version, date) and the exact command (paths shown as placeholders); a load average more than
half a core above the thread count at the start or the end puts a warning line in the table (the
sections run back to back, so the load the previous bench's own threads left in the 1-minute
average is not counted as other work). Default sizes:

    train          tfmr bench train --preset nanogpt-shakespeare-char --steps 90: tfmr beside
                   Hugging Face GPT-2 and (--nanogpt DIR, a nanoGPT checkout) nanoGPT's own GPT,
                   on --data (the Shakespeare text; the embedded corpus without it)
    cpu-decode     tfmr bench cpu-decode: fp32, bf16 and int8 beside HF generate (5 rounds, 128
                   tokens) and the held-out perplexity of each after 400 training steps
    quant-quality  tfmr bench quant-quality --only g2p: the shipped G2P model's test WER / PER at
                   fp32, bf16 and int8 (all 6,261 test words, greedy)
    bpe            tfmr bench bpe: training and encoding beside HF tokenizers and tiktoken, on --data
    hf-load        tfmr bench hf-load --rounds 5: a GPT-2 124M folder, tfmr beside transformers
    g2p            tfmr bench g2p: the shipped G2P model's words/s and one-word latency beside
                   CMUdict lookup (all test words, greedy and beam 5, the compiled one-word step)

--quick runs every section at tiny sizes (for tests: the figures mean nothing). A section whose
bench fails keeps its old table; the command then ends with exit code 1. Markers missing from
--doc are refused, in one line, before anything runs.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ConfigError
from .cpu_decode import cpu_model, load_average
from .quant_quality import g2p_lines, lm_lines


@dataclass
class Arg:
    """A command-line value that is a path: `real` is passed, `shown` is printed in the docs."""

    real: str
    shown: str


def _shown(argv: list) -> str:
    return " ".join(a.shown if isinstance(a, Arg) else a for a in argv)


def _real(argv: list) -> list[str]:
    return [a.real if isinstance(a, Arg) else a for a in argv]


def _given(args) -> list:
    """--data as the bench receives it (the train and bpe sections read it)."""
    argv = []
    if args.data:
        argv += ["--data", Arg(args.data, f"PATH/TO/{Path(args.data).name}")]
    return argv


# ----------------------------------------------------------------------------- the sections
def train_argv(args, out: Path) -> list:
    size = (
        ["--preset", "tiny", "--steps", "3", "--warmup", "1"]
        if args.quick
        else ["--preset", "nanogpt-shakespeare-char", "--steps", "90"]
    )
    nanogpt = ["--nanogpt", Arg(args.nanogpt, "PATH/TO/nanoGPT")] if args.nanogpt else []
    return [*size, *_given(args), *nanogpt, "--json", Arg(str(out / "train.json"), "FILE.json")]


def train_table(args, out: Path) -> list[str]:
    r = json.loads((out / "train.json").read_text())
    m = r["model"]
    lines = [
        f"{m['layers']} layers, {m['heads']} heads, dim {m['dim']}, context {m['context']}, "
        f"vocab {m['vocab_size']}; {r['tokens_per_step']:,} tokens a step, "
        f"{r['steps_timed']} timed steps each, contenders alternating.",
        "",
        "| contender | ms/step | tokens/s | MFU | first row's speed-up over this row |",
        "|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['name']} | {row['ms_per_step']:.1f} | {row['tokens_per_s']:,.0f} | "
            f"{row['mfu']:.1%} | {row['tfmr_speedup']:.2f}x |"
        )
    lines += [""] + [f"MFU of {p} rows is against: {v['is']}." for p, v in r["peaks"].items()]
    if not args.nanogpt:
        lines.append("nanoGPT was not run: give `--nanogpt DIR`, a nanoGPT checkout.")
    return lines


def decode_argv(args, out: Path) -> list:
    quick = ["--rounds", "1", "--new-tokens", "8", "--no-compile", "--quality-steps", "5"]
    quick += ["--windows", "4"]
    return [*(quick if args.quick else []), "--out", Arg(str(out / "decode.md"), "FILE.md")]


def decode_table(args, out: Path) -> list[str]:
    r = json.loads((out / "decode.json").read_text())
    bandwidth = r["copy_bandwidth"]
    lines = [
        f"{r['rows'][0]['model']}, batch 1, {r['env']['prompt']}-token prompt, "
        f"{r['env']['new tokens']} new tokens, median of {r['env']['rounds']} rounds; "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s.",
        "",
        "| strategy | method | weights | tokens/s | x HF | same tokens as HF | next token as fp32 "
        "(teacher-forced) | MB read / token | share of bandwidth limit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(_decode_row(row, bandwidth))
    if r.get("quality"):
        lines += [""] + lm_lines(r["quality"])
    return lines


def _decode_row(row: dict, bandwidth: float) -> str:
    head = f"| {row['strategy']} | {row['method']} | {row.get('weights', '')} |"
    if "error" in row:
        return f"{head} failed: {row['error']} | | | | | |"
    read = row["weights_mb"] + row["kv_cache_mb"]
    limit = bandwidth / (read * 1e6)
    same = (
        ""
        if row["same_tokens_as_hf"] is None
        else f"{row['same_tokens_as_hf']}/{row['new_tokens']}"
    )
    agree = row.get("argmax_agreement_fp32")
    return (
        f"{head} {row['tokens_per_s']:.1f} | {row['speedup_vs_hf'] or 0:.2f} | {same} | "
        f"{'' if agree is None else f'{agree:.1%}'} | {read:.1f} | {row['tokens_per_s'] / limit:.1%} |"
    )


def quality_argv(args, out: Path) -> list:
    quick = ["--limit", "20"] if args.quick else []
    return ["--only", "g2p", *quick, "--json", Arg(str(out / "quality.json"), "FILE.json")]


def quality_table(args, out: Path) -> list[str]:
    return g2p_lines(json.loads((out / "quality.json").read_text())["g2p"])


def bpe_argv(args, out: Path) -> list:
    quick = ["--vocab", "300", "--encode-vocab", "300", "--repeats", "1", "--skip-stdlib"]
    return [
        *(quick if args.quick else []),
        *_given(args),
        "--json",
        Arg(str(out / "bpe.json"), "FILE.json"),
    ]


def bpe_table(args, out: Path) -> list[str]:
    r = json.loads((out / "bpe.json").read_text())
    lines = [
        "Training, seconds (best of the repeats; HF/tfmr above 1: tfmr, GPT-4 pattern, is faster):",
        "",
        "| corpus | vocab | HF tokenizers | tfmr (GPT-2 pattern) | tfmr (GPT-4 pattern) | HF / tfmr |",
        "|---|---|---|---|---|---|",
    ]
    for t in r["training"]:
        gpt2 = f"{t['tfmr_gpt2_s']:.3f}" if "tfmr_gpt2_s" in t else "-"
        one = f"; 1 thr: {t['hf_1thread_s']:.3f}" if "hf_1thread_s" in t else ""
        lines.append(
            f"| {t['corpus']} | {t['vocab']} | {t['hf_s']:.3f} ({t['hf_threads']} thr{one}) | {gpt2} | "
            f"{t['tfmr_gpt4_s']:.3f} | {t['hf_s'] / t['tfmr_gpt4_s']:.2f} |"
        )
    e = r["encoding"]
    return lines + [
        "",
        f"Encoding {e['corpus']} ({e['text_mb']:.2f} MB, vocab {e['vocab']}), MB/s:",
        "",
        "| tiktoken | tfmr fast | fast / tiktoken | tfmr pure, cold cache | tfmr pure, warm | same ids |",
        "|---|---|---|---|---|---|",
        f"| {e['tiktoken_mb_s']:.2f} | {e['tfmr_fast_mb_s']:.2f} | {e['fast_vs_tiktoken']:.2f} | "
        f"{e['tfmr_pure_cold_mb_s']:.2f} | {e['tfmr_pure_warm_mb_s']:.2f} | {e['same_ids']} |",
    ]


def load_argv(args, out: Path) -> list:
    size = ["--quick", "--rounds", "1"] if args.quick else ["--rounds", "5"]
    return [*size, "--json", Arg(str(out / "load.json"), "FILE.json")]


def load_table(args, out: Path) -> list[str]:
    r = json.loads((out / "load.json").read_text())
    lines = [
        f"A random {r['shape']} folder ({r['parameters']:,} parameters), median of "
        f"{len(r['rounds']['tfmr'])} rounds, loaders alternating.",
        "",
        "| loader | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {s:.3f} |" for name, s in r["seconds"].items()]
    if "transformers" in r["seconds"]:
        ratio = r["seconds"]["transformers"] / r["seconds"]["tfmr"]
        lines += ["", f"transformers / tfmr: {ratio:.2f} (above 1: tfmr loads faster)."]
    return lines


def g2p_argv(args, out: Path) -> list:
    quick = ["--limit", "20", "--calls", "5", "--no-compiled"] if args.quick else []
    return [*quick, "--out", Arg(str(out / "g2p"), "DIR")]


def g2p_table(args, out: Path) -> list[str]:
    r = json.loads((out / "g2p" / "g2p_bench.json").read_text())
    shipped = r["model"].startswith("the shipped model")  # its path is this machine's
    lines = [
        f"{'the shipped model' if shipped else Path(r['model']).name}, "
        f"{r['parameters'] / 1e6:.2f}M parameters, {r['test_words']:,} test words, "
        "scored without stress.",
        "",
        f"| | words/s | one word (median of {r['calls']}) | WER | PER |",
        "|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        one = "-" if row["one_word_s"] is None else f"{1e3 * row['one_word_s']:.3f} ms"
        scores = [
            "-" if row[k] is None else f"{100 * row[k]:.2f}%{row['mark']}" for k in ("wer", "per")
        ]
        lines.append(
            f"| {row['name']} | {row['words_per_s']:,.0f} | {one} | {scores[0]} | {scores[1]} |"
        )
    if any(row["mark"] for row in r["rows"]):
        lines += ["", f"\\* on the {r['calls']} words the one-word decoder was timed on."]
    return lines


@dataclass
class Section:
    bench: str  # the BENCHES name it runs
    argv: object  # (args, work folder) -> the bench's flags (str or Arg)
    table: object  # (args, work folder) -> the markdown lines of its table
    reads: tuple = ()  # the flags of `tfmr bench tables` it passes on (data, nanogpt)


SECTIONS = {
    "train": Section("train", train_argv, train_table, ("data", "nanogpt")),
    "cpu-decode": Section("cpu-decode", decode_argv, decode_table),
    "quant-quality": Section("quant-quality", quality_argv, quality_table),
    "bpe": Section("bpe", bpe_argv, bpe_table, ("data",)),
    "hf-load": Section("hf-load", load_argv, load_table),
    "g2p": Section("g2p", g2p_argv, g2p_table),
}


# ----------------------------------------------------------------------------- the document
def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} start -->", f"<!-- bench:{name} end -->"


def check_markers(text: str, names: list[str], doc: Path) -> None:
    """Each section's start marker once, then its end marker once (one-line ConfigError otherwise)."""
    for name in names:
        start, end = markers(name)
        if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
            raise ConfigError(
                f"{doc} needs one `{start}` and, after it, one `{end}` for the {name} table"
            )


def replace_block(text: str, name: str, block: str) -> str:
    """`text` with what stands between `name`'s markers replaced by `block`."""
    start, end = markers(name)
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block.rstrip()}\n{end}{tail}"


BUSY_MARGIN = 0.5  # cores of load beyond the bench's own threads before a table says "busy"


def machine_line(start: float | None, end: float | None) -> tuple[str, str | None]:
    """(the machine line, a warning when the load average at start or end exceeded the threads)."""
    name, bf16 = cpu_model()
    threads = torch.get_num_threads()
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    plural = "thread" if threads == 1 else "threads"
    line = (
        f"machine: {name} (native bf16: {'yes' if bf16 else 'no'}), {threads} {plural}, load "
        f"average {start} at start and {end} at end; torch {torch.__version__}; {date}"
    )
    busy = max(start or 0.0, end or 0.0) > threads + BUSY_MARGIN
    warning = (
        f"> **Warning: the machine was busy** (load average more than {BUSY_MARGIN} above its "
        f"{threads} {plural}): other "
        "work shared the cores, so the absolute figures are low; only the ratios measured in the "
        "same run hold."
    )
    return line, warning if busy else None


def block(name: str, args, argv: list, lines: list[str], start, end) -> str:
    """One section's content between its markers: machine, command, warning, table."""
    machine, warning = machine_line(start, end)
    reads = SECTIONS[name].reads
    again = ["--only", name, *(["--quick"] if args.quick else [])]
    again += ["--data", "PATH/TO/" + Path(args.data).name] if args.data and "data" in reads else []
    again += ["--nanogpt", "PATH/TO/nanoGPT"] if args.nanogpt and "nanogpt" in reads else []
    out = [
        machine,
        "",
        f"command: `tfmr bench {SECTIONS[name].bench} {_shown(argv)}` "
        f"(regenerated by `tfmr bench tables {' '.join(again)}`)",
        "",
    ]
    if args.quick:
        out += [
            "(--quick: tiny sizes, a check that the command runs; the figures mean nothing)",
            "",
        ]
    return "\n".join(out + ([warning, ""] if warning else []) + lines)


# ----------------------------------------------------------------------------- the command
def add_arguments(p) -> None:
    p.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated tables: {', '.join(SECTIONS)}"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (a check that it runs)")
    p.add_argument("--data", help="the Shakespeare text (tinyshakespeare.txt) for train and bpe")
    p.add_argument("--nanogpt", help="a nanoGPT checkout (its model.py) for the train table")
    p.add_argument("--doc", default="docs/benchmarks.md", help="the markdown file to rewrite")
    p.add_argument("--dry-run", action="store_true", help="print the tables; write nothing")


def chosen(only: str) -> list[str]:
    names = [s.strip() for s in only.split(",") if s.strip()]
    for s in names:
        if s not in SECTIONS:
            raise ConfigError(
                f"--only {only}: each must be one of {', '.join(SECTIONS)}, got {s!r}"
            )
    return names


def _check_paths(args) -> None:
    if args.data and not Path(args.data).is_file():
        raise ConfigError(f"--data {args.data}: no such file (the Shakespeare text)")
    if args.nanogpt and not (Path(args.nanogpt) / "model.py").is_file():
        raise ConfigError(f"--nanogpt {args.nanogpt}: no model.py there (a nanoGPT checkout)")


def run_section(name: str, args, work: Path) -> str | None:
    """Run one section's bench; its block, or None when the bench failed."""
    section = SECTIONS[name]
    argv = section.argv(args, work)
    command = [sys.executable, "-m", "tfmr", "bench", section.bench, *_real(argv)]
    print(f"\n== {name}: tfmr bench {section.bench} {_shown(argv)}", flush=True)
    start = load_average()
    code = subprocess.run(command).returncode
    end = load_average()
    if code != 0:
        print(f"tables: {name} failed (exit code {code}); its table is left as it was")
        return None
    return block(name, args, argv, section.table(args, work), start, end)


def main(args) -> int:
    names = chosen(args.only)
    doc = Path(args.doc)
    if not doc.is_file():
        raise ConfigError(f"--doc {doc}: no such file (run from a tfmr checkout, or give --doc)")
    text = doc.read_text(encoding="utf-8")
    check_markers(text, names, doc)
    _check_paths(args)
    failed = []
    with tempfile.TemporaryDirectory(prefix="tfmr-tables-") as tmp:
        for name in names:
            content = run_section(name, args, Path(tmp))
            if content is None:
                failed.append(name)
                continue
            print("\n" + content + "\n")
            text = replace_block(text, name, content)
            if not args.dry_run:  # written after each table, so a later failure keeps it
                doc.write_text(text, encoding="utf-8")
    done = [n for n in names if n not in failed]
    print(
        f"tables: {', '.join(done) or 'none'} {'printed' if args.dry_run else f'written to {doc}'}"
    )
    return 1 if failed else 0
