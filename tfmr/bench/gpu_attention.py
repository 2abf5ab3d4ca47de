"""Attention kernels on a GPU: forward + backward time of tfmr's kernels beside SDPA flash.

    tfmr bench gpu-attention [--out runs/gpu_attention]   # on a CUDA GPU
    tfmr bench gpu-attention --quick                      # CPU smoke run

Shapes: bf16, 16 heads, head dim 64; T=4096 with batch 4 and T=16384
with batch 1. Rows (each: forward + backward of one attention call, CUDA events, median of
--repeats after --warmup calls; compilation happens in the warm-up):

    sdpa_flash          peer: F.scaled_dot_product_attention(is_causal=True), flash backend forced
    dense_causal        tfmr `sdpa` kernel, Mask(causal=True)               goal >= 0.95x sdpa_flash
    flex_kernel_causal  tfmr `flex` kernel, same mask (hands it to SDPA)
    flex_raw_causal     FlexAttention compiled, causal block mask (what flex alone gives)
    sliding_1024        tfmr `flex` kernel, causal, WindowRule(1024)        goal >= 2.5x dense at 16k
    alibi_causal        tfmr `sdpa` kernel, causal + ALiBi (extra head dims on the flash path)
                                                                            goal >= 0.8x sdpa_flash
    alibi_causal_flash  the same with the flash backend forced (fails if flash refuses the shape)
    sdpa_cudnn, alibi_causal_cudnn   the cuDNN backend forced, for both (information)
    alibi_flex          FlexAttention compiled with ALiBi as score_mod (the published flex figure: 0.40x at 16k)
    longformer / bigbird  tfmr `flex` kernel with those patterns (window 512, 64 global, 2 random blocks)

Before timing, a correctness pass compares every tfmr path with the eager kernel in float32 at
T=1024 (max abs error of outputs and gradients). Writes <out>.json and <out>.md and prints the
markdown. --quick runs small float32 shapes on CPU to prove the script works; its times mean
nothing (CPU, shared machine).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..kernels import SDPA, Eager, Flex, flex_attention_call
from ..masks import LinearBias, Mask
from ..patterns import BigBirdRule, LongformerRule, WindowRule
from ..positions import alibi_slopes
from ..programs import positive_int


def _backend(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, name)])


def rows(H: int, quick: bool):
    """name -> function(q, k, v) -> out, for one shape."""
    slopes = alibi_slopes(H)
    sdpa, flex = SDPA(), Flex()

    def sdpa_flash(q, k, v):
        if q.is_cuda:
            with _backend("FLASH_ATTENTION"):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forced(backend, bias):
        def call(q, k, v):
            with _backend(backend):
                return sdpa(q, k, v, Mask(causal=True), bias)[0]

        return call

    table = {
        "sdpa_flash": sdpa_flash,
        "dense_causal": lambda q, k, v: sdpa(q, k, v, Mask(causal=True))[0],
        "flex_kernel_causal": lambda q, k, v: flex(q, k, v, Mask(causal=True))[0],
        "sliding_1024": lambda q, k, v: flex(q, k, v, SLIDING)[0],
        "alibi_causal": lambda q, k, v: sdpa(q, k, v, Mask(causal=True), LinearBias(slopes))[0],
        "longformer": lambda q, k, v: flex(q, k, v, LONGFORMER)[0],
        "bigbird": lambda q, k, v: flex(q, k, v, BIGBIRD)[0],
    }
    if not quick:  # raw FlexAttention rows need CUDA (no CPU backward)
        table["alibi_causal_flash"] = forced("FLASH_ATTENTION", LinearBias(slopes))
        table["sdpa_cudnn"] = forced("CUDNN_ATTENTION", None)
        table["alibi_causal_cudnn"] = forced("CUDNN_ATTENTION", LinearBias(slopes))
        table["flex_raw_causal"] = lambda q, k, v: flex_attention_call(q, k, v, Mask(causal=True))
        table["alibi_flex"] = lambda q, k, v: flex_attention_call(
            q, k, v, Mask(causal=True), LinearBias(slopes)
        )
    return table


# one Mask object per pattern, reused across calls, so the block mask is built once per shape
SLIDING = Mask(causal=True, rule=WindowRule(1024))
LONGFORMER = Mask(causal=True, rule=LongformerRule(512, 64))
BIGBIRD = Mask(causal=True, rule=BigBirdRule(512, 64, random_blocks=2, block=128))


def _timer(device):
    if device.type == "cuda":

        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)

        return run

    def run_cpu(fn):
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return run_cpu


def time_row(fn, q, k, v, warmup: int, repeats: int) -> float:
    """Median milliseconds of forward + backward."""
    grad = torch.randn_like(q)

    def step():
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(grad)

    timer = _timer(q.device)
    for _ in range(warmup):
        step()
    return statistics.median(timer(step) for _ in range(repeats))


def check(device, quick: bool) -> dict:
    """Max abs difference to eager (float32) of each tfmr path, outputs and gradients."""
    T, H = (256, 4) if quick else (1024, 16)
    g = torch.Generator(device="cpu").manual_seed(0)
    base = [torch.randn(1, H, T, 64, generator=g).to(device) for _ in range(3)]
    masks = {
        "dense_causal": (Mask(causal=True), None),
        "alibi_causal": (Mask(causal=True), LinearBias(alibi_slopes(H))),
        "sliding": (Mask(causal=True, rule=WindowRule(T // 4)), None),
        "longformer": (Mask(causal=True, rule=LongformerRule(T // 8, 16)), None),
        "bigbird": (
            Mask(causal=True, rule=BigBirdRule(T // 8, 16, random_blocks=2, block=128)),
            None,
        ),
    }
    out = {}
    for name, (mask, bias) in masks.items():
        kernel = Flex() if name in ("sliding", "longformer", "bigbird") else SDPA()
        results = []
        for k_ in (Eager(), kernel):
            q, k, v = (t.clone().requires_grad_() for t in base)
            o = k_(q, k, v, mask, bias)[0]
            o.sum().backward()
            results.append([o.detach(), q.grad, k.grad, v.grad])
        out[name] = max((a - b).abs().max().item() for a, b in zip(*results))
    return out


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="small float32 shapes on CPU (smoke run)")
    p.add_argument(
        "--out", default=None, help="output path without extension (default runs/gpu_attention)"
    )
    p.add_argument("--warmup", type=positive_int, default=None)
    p.add_argument("--repeats", type=positive_int, default=None)


def main(args) -> int:
    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.quick:
        print("no CUDA device: running --quick instead (CPU times mean nothing)")
        args.quick = True
    dtype = torch.float32 if args.quick else torch.bfloat16
    shapes = [(1, 4, 256), (1, 4, 512)] if args.quick else [(4, 16, 4096), (1, 16, 16384)]
    warmup = args.warmup or (1 if args.quick else 5)
    repeats = args.repeats or (3 if args.quick else 10)
    out_path = Path(
        args.out or Path("runs") / ("gpu_attention_quick" if args.quick else "gpu_attention")
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)

    report = {
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype),
        "head_dim": 64,
        "quick": args.quick,
        "max_abs_error_vs_eager_fp32": check(device, args.quick),
        "times_ms": {},
        "ratios": {},
    }
    print(
        f"correctness (max abs error vs eager, fp32): {report['max_abs_error_vs_eager_fp32']}",
        flush=True,
    )
    for B, H, T in shapes:
        g = torch.Generator(device="cpu").manual_seed(1)
        q, k, v = (
            torch.randn(B, H, T, 64, generator=g).to(device, dtype).requires_grad_()
            for _ in range(3)
        )
        times = {}
        for name, fn in rows(H, args.quick).items():
            try:
                times[name] = round(time_row(fn, q, k, v, warmup, repeats), 4)
            except Exception as e:  # a backend that refuses the shape is a result, not a crash
                times[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            print(f"T={T:>6} B={B} {name:>20}: {times[name]}", flush=True)
        report["times_ms"][f"T={T},B={B}"] = times
        report["ratios"][f"T={T},B={B}"] = ratios(times)
    Path(f"{out_path}.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    Path(f"{out_path}.md").write_text(md)
    print("\n" + md + f"\nwritten: {out_path}.json, {out_path}.md")
    return 0


def ratios(times: dict) -> dict:
    def speed(row, ref):  # > 1: row is faster than ref
        a, b = times.get(row), times.get(ref)
        return round(b / a, 3) if isinstance(a, float) and isinstance(b, float) else None

    return {
        "dense_causal / sdpa_flash (goal >= 0.95)": speed("dense_causal", "sdpa_flash"),
        "sliding_1024 vs dense_causal, x faster (goal >= 2.5 at 16k)": speed(
            "sliding_1024", "dense_causal"
        ),
        "alibi_causal / sdpa_flash (goal >= 0.8)": speed("alibi_causal", "sdpa_flash"),
        "alibi_causal_flash / sdpa_flash": speed("alibi_causal_flash", "sdpa_flash"),
        "alibi_causal_cudnn / sdpa_flash": speed("alibi_causal_cudnn", "sdpa_flash"),
        "alibi_flex / sdpa_flash": speed("alibi_flex", "sdpa_flash"),
    }


def markdown(report: dict) -> str:
    shapes = list(report["times_ms"])
    names = list(dict.fromkeys(n for s in shapes for n in report["times_ms"][s]))
    lines = [
        f"device: {report['device']}, torch {report['torch']}, {report['dtype']}, head dim 64, "
        f"forward+backward ms (median)",
        "",
        "| row | " + " | ".join(shapes) + " |",
        "|---" * (len(shapes) + 1) + "|",
    ]
    for n in names:
        cells = [report["times_ms"][s].get(n) for s in shapes]
        lines.append(
            f"| {n} | "
            + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells)
            + " |"
        )
    lines += ["", "| ratio | " + " | ".join(shapes) + " |", "|---" * (len(shapes) + 1) + "|"]
    for r in report["ratios"][shapes[0]]:
        lines.append(f"| {r} | " + " | ".join(str(report["ratios"][s][r]) for s in shapes) + " |")
    lines += [
        "",
        f"max abs error vs eager (fp32, outputs and grads): {report['max_abs_error_vs_eager_fp32']}",
    ]
    return "\n".join(lines) + "\n"
