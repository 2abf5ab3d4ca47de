"""MoE expert dispatch: an MoE layer vs a dense FFN of the same active size, forward + backward tokens/s.

    tfmr bench moe-dispatch                                  # CPU, fp32
    tfmr bench moe-dispatch --device cuda --dtype bfloat16 --tokens 16384 --dim 1024

A speed run of one layer. The quality question (does an MoE language model train to a lower loss
than a dense one at the same active size?) is the experiment `tfmr experiment moe`.

Each MoE expert has hidden = dense_hidden / top_k, so a token meets the same number of
multiply-adds in both (plus the router's dim x E). The MoE variants timed are top-k dropless
(Mixtral style) and, with --top-k 1 or the default list, Switch top-1 with capacity 1.25.
Contenders take turns in rounds (dense, moe, dense, moe, ...) so that a shared machine's noise
hits all of them alike; the figure is the median round. Only ratios measured in one run mean
anything on a shared machine. Goal on a GPU: MoE at 8 experts, top-2 >= 0.7x the dense speed.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from ..config import ConfigError
from ..ffn import FFNS, MoE
from ..programs import count, positive_int, short, torch_device


def timer(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def step_time(layer, x, device, iters: int, dtype) -> float:
    """Seconds per forward + backward, averaged over `iters` calls."""
    autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
    t0 = timer(device)
    for _ in range(iters):
        with autocast:
            y, aux = layer(x)
            loss = y.float().square().mean() + (aux if aux is not None else 0)
        loss.backward()
    return (timer(device) - t0) / iters


def build(args, device):
    dense_hidden = args.mult * args.dim
    torch.manual_seed(0)
    kinds = {"dense": FFNS[args.expert](dim=args.dim, bias=False, hidden=dense_hidden)}
    for k, cf in args.variants:
        if dense_hidden % k:
            raise ConfigError(
                f"dense hidden {dense_hidden} (--mult x --dim) is not divisible by top-k {k}"
            )
        name = f"moe E={args.experts} top-{k}" + (f" cf={cf}" if cf else " dropless")
        kinds[name] = MoE(
            dim=args.dim,
            bias=False,
            experts=args.experts,
            top_k=k,
            capacity_factor=cf,
            expert=args.expert,
            hidden=dense_hidden // k,
        )
    return {name: layer.to(device).train() for name, layer in kinds.items()}


def add_arguments(p) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the layers' weight type",
    )
    p.add_argument("--dim", type=positive_int, default=256, help="model width")
    p.add_argument("--mult", type=positive_int, default=4, help="dense hidden = mult * dim")
    p.add_argument(
        "--tokens", type=positive_int, default=4096, help="tokens per call (batch x sequence)"
    )
    p.add_argument("--experts", type=positive_int, default=8, help="experts of the MoE variants")
    p.add_argument(
        "--top-k",
        type=positive_int,
        nargs="*",
        default=None,
        help="MoE variants: top-k values (default: 2 dropless and 1 with capacity 1.25)",
    )
    p.add_argument(
        "--expert", default="mlp", choices=["mlp", "swiglu"], help="each expert's feed-forward"
    )
    p.add_argument(
        "--rounds", type=positive_int, default=7, help="timed rounds (the median is kept)"
    )
    p.add_argument("--iters", type=positive_int, default=5, help="calls per round")
    p.add_argument("--threads", type=count, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--json", help="also write the results here")


def main(args) -> int:
    if any(k > args.experts for k in args.top_k or ()):
        raise ConfigError(f"--top-k cannot exceed --experts ({args.experts})")
    args.variants = [(k, 0.0) for k in args.top_k] if args.top_k else [(2, 0.0), (1, 1.25)]
    args.rounds, args.iters = short("repeats", args.rounds), short("repeats", args.iters)
    args.tokens = short("tokens", args.tokens)  # TFMR_DOCS_SHORT: one small call per layer
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch_device(args.device)
    dtype = getattr(torch, args.dtype)
    layers = build(args, device)
    x = torch.randn(args.tokens, args.dim, device=device, requires_grad=True)
    for layer in layers.values():  # warm-up
        step_time(layer, x, device, 2, dtype)
    times = {name: [] for name in layers}
    for _ in range(args.rounds):
        for name, layer in layers.items():
            times[name].append(step_time(layer, x, device, args.iters, dtype))
    dense = statistics.median(times["dense"])
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"# {where}, torch {torch.__version__}, {args.dtype}, dim {args.dim}, dense hidden {args.mult * args.dim}, "
        f"{args.tokens} tokens per call, {args.expert} experts, median of {args.rounds} rounds x {args.iters} calls"
    )
    print(f"{'layer':<28} {'params':>10} {'ms/call':>9} {'tokens/s':>12} {'vs dense':>9}")
    results = []
    for name, layer in layers.items():
        t = statistics.median(times[name])
        n_params = sum(q.numel() for q in layer.parameters())
        print(
            f"{name:<28} {n_params:>10,} {t * 1e3:>9.2f} {args.tokens / t:>12,.0f} {dense / t:>8.2f}x"
        )
        results.append(
            {
                "layer": name,
                "params": n_params,
                "ms": t * 1e3,
                "tokens_per_s": args.tokens / t,
                "vs_dense": dense / t,
            }
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "device": where,
                    "args": {k: v for k, v in vars(args).items() if k not in ("variants", "func")},
                    "results": results,
                },
                f,
                indent=2,
            )
    return 0
