"""Decoding speed on CPU: tfmr against Hugging Face `generate` at a small GPT-2 shape, one run.

    tfmr bench cpu-decode --out decode_cpu.md [--rounds 5] [--new-tokens 128]

The comparison `tfmr bench gpu-decode` (gpu_decode.py) makes on a GPU, at a CPU-sized shape: a random GPT-2 of
4 layers, width 256, 4 heads, GPT-2's vocabulary (50257) and context (1024), fp32, batch 1,
16-token prompt. Greedy and beam 4, each by HF generate, tfmr eager (decode.py), tfmr-static
(fastdecode.py's static cache, run eagerly) and tfmr-fast (the same step through torch.compile;
no CUDA graphs on CPU). Methods alternate within each round, so drift on a shared machine hits
all of them; medians of --rounds timed runs after a warm-up (which compiles). Only the ratios
measured in one run mean anything on a busy machine. Tokens are checked equal to HF's.

Beside fp32, tfmr-fast-bf16 and tfmr-fast-int8 run the same fast step over weight-only quantized
copies (tfmr/quantize.py; --weights picks them): their bandwidth limit counts the bytes they read
(int8 matrices and scales), and their greedy tokens are compared with fp32's per position, free-
running ("same tokens as HF", which equals fp32 here) and teacher-forced on fp32's greedy output.
The CPU model, native bf16, threads and the load average at start and end go into the table's
environment line, with a warning when the load exceeded the threads.

Quality beside the speed: after the timed runs, a small language model is trained for
--quality-steps steps on the embedded corpus (or --checkpoint names a trained one) and its held-out
perplexity at fp32, bf16 and int8 is printed under the table (quant_quality.py's `lm` part; that
bench also scores the G2P model quantized). --quality-steps 0 leaves it out.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from ..config import ConfigError
from ..programs import count, positive_int, short, shortening
from . import gpu_decode, quant_quality


def small_gpt2():
    import transformers

    cfg = transformers.GPT2Config(
        n_layer=4, n_embd=256, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    return transformers.GPT2LMHeadModel(cfg)


def add_arguments(ap) -> None:
    ap.add_argument("--out", default="decode_cpu.md", help="markdown table; JSON beside it (.json)")
    ap.add_argument("--rounds", type=positive_int, default=5, help="timed rounds per contender")
    ap.add_argument("--prompt-len", type=positive_int, default=16, help="prompt tokens")
    ap.add_argument("--new-tokens", type=positive_int, default=128, help="tokens to generate")
    ap.add_argument("--threads", type=count, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument(
        "--weights",
        default="bf16,int8",
        help="weight-only quantized rows beside fp32 (tfmr/quantize.py): comma-separated bf16, int8, "
        "or none",
    )
    ap.add_argument(
        "--quality-steps",
        type=count,
        default=400,
        help="train the perplexity model this many steps (0: no quality table)",
    )
    ap.add_argument(
        "--windows", type=positive_int, default=128, help="held-out windows the perplexity reads"
    )
    ap.add_argument(
        "--checkpoint", help="a trained language-model checkpoint for the perplexity rows"
    )


def cpu_model() -> tuple[str, bool]:
    """(the CPU's model name, whether it has native bf16 instructions: avx512_bf16 or amx_bf16), from
    /proc/cpuinfo where there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "cpu", False
    names = [
        line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")
    ]
    flags = set(" ".join(line for line in info.splitlines() if line.startswith("flags")).split())
    return (names[0] if names else platform.processor() or "cpu"), bool(
        flags & {"avx512_bf16", "amx_bf16"}
    )


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def main(args) -> int:
    if args.prompt_len + args.new_tokens > 1024:
        raise ConfigError(
            f"--prompt-len + --new-tokens must fit GPT-2's context (1024), got "
            f"{args.prompt_len + args.new_tokens}"
        )
    gpu_decode.need_transformers()
    args.rounds, args.new_tokens = short("repeats", args.rounds), short("tokens", args.new_tokens)
    args.quality_steps, args.windows = (
        short("steps", args.quality_steps),
        short("words", args.windows),
    )
    args.no_compile = args.no_compile or shortening()  # a shortened run: no minutes of compiling
    if args.threads:
        torch.set_num_threads(args.threads)
    args.mode, args.check, args.static_too = None, True, True
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    torch.manual_seed(0)
    import transformers

    weights = (
        [] if args.weights == "none" else [w.strip() for w in args.weights.split(",") if w.strip()]
    )
    for w in weights:
        if w not in ("bf16", "int8"):
            raise ConfigError(
                f"--weights {args.weights}: each must be bf16 or int8 (or none), got {w!r}"
            )
    args.weights = weights
    device = torch.device("cpu")
    name, bf16 = cpu_model()
    env = {
        "device": name,
        "native bf16": "yes" if bf16 else "no",
        "load average at start": load_average(),
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "weights": ", ".join(["fp32", *weights]),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "compile": "off" if args.no_compile else "default (inductor C++)",
        "prompt": args.prompt_len,
        "new tokens": args.new_tokens,
        "rounds": args.rounds,
    }
    print("environment:", env)
    bandwidth = gpu_decode.copy_bandwidth(device, torch.float32)
    rows = gpu_decode.case(
        "gpt2-small-cpu (4x256)", small_gpt2(), args, device, torch.float32, ["greedy", "beam4"]
    )
    env["load average at end"] = load_average()
    busy = max(env["load average at start"] or 0, env["load average at end"] or 0)
    if (
        busy > 1.25 * env["threads"]
    ):  # more runnable work than the threads this run uses: figures are shared
        env["WARNING"] = (
            f"the machine was busy (load average {busy:.1f} for {env['threads']} threads)"
        )
        print("WARNING:", env["WARNING"])
    quality = None
    if args.checkpoint or args.quality_steps:
        quality = quant_quality.lm_quality(args.checkpoint, args.quality_steps, args.windows)
    gpu_decode.write_report(args.out, rows, env, bandwidth, quality)
    return 0
