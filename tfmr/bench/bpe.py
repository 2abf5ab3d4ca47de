"""BPE training and encoding speed: tfmr beside Hugging Face `tokenizers` and `tiktoken`.

    tfmr bench bpe [--data PATH] [--json out.json] [--repeats 3] [--skip-stdlib]
    tfmr bench bpe --data PATH/tinyshakespeare.txt          (the corpus of the figures in docs/tokenizer.md)

--data is one UTF-8 text file; without it, the embedded corpus (Python's reference docs, about
0.5 MB, tfmr.data.embedded_corpus) written to a temporary file. Measures, each as the best of
--repeats runs (the contenders take turns, so a burst of load from elsewhere hits all of them),
and prints a table and then JSON:
1. training on --data to vocab 4096 and 16384 (--vocab): tfmr (GPT-2 and GPT-4 split patterns)
   vs HF ByteLevel BPE on one thread (RAYON_NUM_THREADS=1, run in a subprocess);
2. training on the standard library's .py sources (the folder of `os.__file__`, without
   site-packages and test folders; non-UTF-8 files skipped) to vocab 32768: tfmr vs HF on all
   cores (and on one thread, for reference);
3. encoding --data (MB/s): tiktoken itself, tfmr's fast path (tiktoken underneath), and tfmr's
   pure-Python encoder with a cold and a warm cache.
Times include reading the text and pre-tokenization on both sides. Not a test: nothing is
asserted. Left out: GPU anything, memory use, and HF's own encode speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import ConfigError
from ..data import DataError, embedded_corpus, read_text
from ..programs import positive_int
from ..tokenizers import BPE
from ..tokenizers.bpe import MAX_TRAIN_VOCAB

# Runs in a fresh interpreter so RAYON_NUM_THREADS is read before tokenizers starts its pool.
_HF_SCRIPT = r"""
import json, sys, time
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
paths, vocab = json.loads(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                              show_progress=False)
tok.train(paths, trainer)  # HF reads the files itself (faster than train_from_iterator here)
print(json.dumps({"seconds": time.perf_counter() - start, "vocab": tok.get_vocab_size()}))
"""


def best_of(repeats: int, fn):
    """(best seconds, last result) over `repeats` calls."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def hf_train(paths: list[Path], vocab: int, threads: int | None, repeats: int) -> dict:
    env = dict(os.environ)
    env.pop("RAYON_NUM_THREADS", None)
    if threads is not None:
        env["RAYON_NUM_THREADS"] = str(threads)
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", _HF_SCRIPT, json.dumps([str(p) for p in paths]), str(vocab)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"seconds": min(r["seconds"] for r in runs), "vocab": runs[-1]["vocab"]}


def tfmr_train(paths: list[Path], vocab: int, pattern: str, repeats: int) -> tuple[dict, BPE]:
    def run():
        return BPE.train([p.read_text(encoding="utf-8") for p in paths], vocab, pattern=pattern)

    seconds, tok = best_of(repeats, run)
    return {"seconds": seconds, "vocab": tok.vocab_size}, tok


def stdlib_files() -> tuple[list[Path], int]:
    """UTF-8 .py files of the standard library (no site-packages, no test folders); skipped count."""
    root = Path(os.__file__).parent
    files, skipped = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in ("site-packages", "test", "tests", "__pycache__")
        )
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = Path(dirpath) / name
                try:
                    path.read_bytes().decode("utf-8")
                    files.append(path)
                except UnicodeDecodeError:
                    skipped += 1
    return files, skipped


def interleaved(repeats: int, runners: dict) -> dict:
    """Best seconds per runner; the runners take turns, so a burst of load hits all of them."""
    best = {name: float("inf") for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            best[name] = min(best[name], run())
    return best


def bench_training(args) -> list[dict]:
    rows = []
    for vocab in args.vocab:
        best = interleaved(
            args.repeats,
            {
                "hf_s": lambda vocab=vocab: hf_train([args.data], vocab, 1, 1)["seconds"],
                "tfmr_gpt2_s": lambda vocab=vocab: tfmr_train([args.data], vocab, "gpt2", 1)[0][
                    "seconds"
                ],
                "tfmr_gpt4_s": lambda vocab=vocab: tfmr_train([args.data], vocab, "gpt4", 1)[0][
                    "seconds"
                ],
            },
        )
        rows.append({"corpus": args.corpus_name, "vocab": vocab, "hf_threads": 1, **best})
    if not args.skip_stdlib:
        files, skipped = stdlib_files()
        mb = sum(p.stat().st_size for p in files) / 1e6
        name = f"stdlib .py ({len(files)} files, {mb:.1f} MB, {skipped} non-UTF-8 skipped)"
        vocab = args.stdlib_vocab
        best = interleaved(
            args.stdlib_repeats,
            {
                "hf_s": lambda: hf_train(files, vocab, None, 1)["seconds"],
                "hf_1thread_s": lambda: hf_train(files, vocab, 1, 1)["seconds"],
                "tfmr_gpt4_s": lambda: tfmr_train(files, vocab, "gpt4", 1)[0]["seconds"],
            },
        )
        rows.append({"corpus": name, "vocab": vocab, "hf_threads": os.cpu_count(), **best})
    return rows


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cold_encode(tok: BPE, text: str) -> float:
    """Seconds for the pure-Python encoder with an empty pre-token cache (a fresh copy)."""
    fresh = BPE.from_dict(json.loads(tok._to_json()))
    return _timed(lambda: fresh.encode(text, fast=False))


def bench_encoding(args) -> dict:
    text = args.data.read_text(encoding="utf-8")
    mb = len(text.encode("utf-8")) / 1e6
    tok = BPE.train(text, args.encode_vocab)
    enc = tok.tiktoken_encoding()
    warm = BPE.from_dict(json.loads(tok._to_json()))
    warm.encode(text, fast=False)  # fills its pre-token cache
    best = interleaved(
        args.repeats,
        {
            "tiktoken": lambda: _timed(lambda: enc.encode_ordinary(text)),
            "tfmr_fast": lambda: _timed(lambda: tok.encode(text)),
            "tfmr_pure_cold": lambda: _cold_encode(tok, text),
            "tfmr_pure_warm": lambda: _timed(lambda: warm.encode(text, fast=False)),
        },
    )
    out = {"corpus": args.corpus_name, "text_mb": mb, "vocab": tok.vocab_size}
    out.update({f"{name}_mb_s": mb / seconds for name, seconds in best.items()})
    out["same_ids"] = enc.encode_ordinary(text) == tok.encode(text) == warm.encode(text, fast=False)
    out["fast_vs_tiktoken"] = out["tfmr_fast_mb_s"] / out["tiktoken_mb_s"]
    return out


def print_tables(train_rows: list[dict], encode: dict) -> None:
    print("\nTraining (seconds, best of repeats; lower is better)")
    print(
        f"{'corpus':<58} {'vocab':>6} {'HF':>16} {'tfmr gpt2':>10} {'tfmr gpt4':>10} {'HF/tfmr':>8}"
    )
    for r in train_rows:
        hf = f"{r['hf_s']:.3f} ({r['hf_threads']} thr)"
        g2 = f"{r['tfmr_gpt2_s']:.3f}" if "tfmr_gpt2_s" in r else "-"
        ratio = r["hf_s"] / r["tfmr_gpt4_s"]
        print(
            f"{r['corpus']:<58} {r['vocab']:>6} {hf:>16} {g2:>10} {r['tfmr_gpt4_s']:>10.3f} {ratio:>8.2f}"
        )
        if "hf_1thread_s" in r:
            print(f"{'  (HF on 1 thread: ' + format(r['hf_1thread_s'], '.3f') + ' s)':<58}")
    e = encode
    print(
        f"\nEncoding {e['corpus']} ({e['text_mb']:.2f} MB, vocab {e['vocab']}), MB/s, best of repeats"
    )
    print(
        f"{'tiktoken':>10} {'tfmr fast':>10} {'fast/tiktoken':>14} {'pure cold':>10} {'pure warm':>10} {'same ids':>9}"
    )
    print(
        f"{e['tiktoken_mb_s']:>10.2f} {e['tfmr_fast_mb_s']:>10.2f} {e['fast_vs_tiktoken']:>14.2f} "
        f"{e['tfmr_pure_cold_mb_s']:>10.2f} {e['tfmr_pure_warm_mb_s']:>10.2f} {str(e['same_ids']):>9}"
    )


def add_arguments(p) -> None:
    p.add_argument(
        "--data", type=Path, help="a UTF-8 text file (default: the embedded corpus, Python's docs)"
    )
    p.add_argument(
        "--vocab", type=positive_int, nargs="+", default=[4096, 16384], help="training vocab sizes"
    )
    p.add_argument(
        "--stdlib-vocab",
        type=positive_int,
        default=32768,
        help="vocab size of the standard-library run",
    )
    p.add_argument(
        "--encode-vocab", type=positive_int, default=16384, help="vocab size of the encoding run"
    )
    p.add_argument(
        "--repeats", type=positive_int, default=5, help="runs per figure (the best is kept)"
    )
    p.add_argument(
        "--stdlib-repeats",
        type=positive_int,
        default=2,
        help="runs of the standard-library training",
    )
    p.add_argument("--skip-stdlib", action="store_true")
    p.add_argument("--json", type=Path, help="also write the results here")


def main(args) -> int:
    for vocab in [*args.vocab, args.stdlib_vocab, args.encode_vocab]:
        if not 256 < vocab <= MAX_TRAIN_VOCAB:
            raise ConfigError(f"vocab sizes must be in 257 ... {MAX_TRAIN_VOCAB}, got {vocab}")
    for peer, what in (("tokenizers", "Hugging Face tokenizers"), ("tiktoken", "tiktoken")):
        if importlib.util.find_spec(peer) is None:
            raise ConfigError(f"bench bpe times {what} beside tfmr: pip install {peer}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:  # HF reads files itself, so the embedded corpus goes to one
            args.data = Path(tmp) / "python-docs.txt"
            args.data.write_text(embedded_corpus(), encoding="utf-8")
            args.corpus_name = "embedded corpus (Python docs)"
        elif not args.data.is_file():
            raise DataError(f"--data takes one text file; not found: {args.data}")
        else:
            read_text(args.data)  # refuses binary, non-UTF-8 and empty files, naming the file
            args.corpus_name = args.data.name
        train_rows = bench_training(args)
        encode = bench_encoding(args)
    print_tables(train_rows, encode)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "training": train_rows,
        "encoding": encode,
    }
    print("\n" + json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
