"""Training throughput (tokens/s, MFU) of tfmr beside its peers, measured in the same run.

    tfmr bench train [--preset nanogpt-shakespeare-char] [--set ...] [--data PATH] [--steps 30]
                     [--no-peer] [--nanogpt PATH/TO/nanoGPT] [--json FILE]

tfmr is timed through the real Trainer (the same `train_step` a run uses). The peers train a
model of the same shape on the same batches with the same optimizer settings:

    hf-gpt2   Hugging Face GPT2LMHeadModel (SDPA attention), if `transformers` is installed
    nanogpt   nanoGPT's GPT class, imported from a checkout you point at with --nanogpt

Rounds alternate tfmr and peers so that machine drift hits both; the figure quoted is the median
step time. MFU divides model FLOPs/s by the device's peak in the precision of that row: the
published bf16 dense peak for known GPUs, otherwise the matmul throughput measured in the same
run in that dtype (bf16 rows against a bf16 matmul, fp32 rows against an fp32 one), so MFU reads
as "share of what this machine's matmul reaches" and stays under 100%.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..config import RunConfig, to_dict
from ..devices import autocast_for, precision
from ..loop import make_optimizer
from ..programs import config_flags, count, positive_int, resolve_config
from ..train import Trainer

GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def device_peak(device: torch.device, precision: str = "fp32") -> tuple[float, str]:
    """(peak FLOP/s, what it is) in `precision` ("bf16" or "fp32"): the published dense bf16 peak
    of a known GPU, else a square matmul in that dtype timed here."""
    if device.type == "cuda" and precision == "bf16":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_PEAK_BF16.items():
            if key in name:
                return peak, f"{name} bf16 dense peak"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    threads = (
        f"{torch.get_num_threads()} threads"
        if device.type == "cpu"
        else torch.cuda.get_device_name(device)
    )
    return 2 * n**3 / min(times), f"{precision} matmul measured here ({threads})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_steps(step_fn, steps: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step_fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _peer_step(model, opt, batches, cfg: RunConfig, device, call):
    """A peer's training step in the peer's own precision: bf16 autocast on GPU, fp32 on CPU
    (what nanoGPT's train.py and a plain Hugging Face loop do)."""
    t = cfg.train
    peer_dtype = "bfloat16" if device.type == "cuda" else "float32"

    def step():
        x, y = batches.next(device)
        with autocast_for(device, peer_dtype):
            loss = call(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def hf_gpt2_peer(cfg: RunConfig, batches, device):
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    m = cfg.model
    hf_cfg = GPT2Config(
        vocab_size=m.vocab_size,
        n_positions=m.context,
        n_embd=m.dim,
        n_layer=m.layers,
        n_head=m.heads,
        resid_pdrop=m.dropout,
        embd_pdrop=m.dropout,
        attn_pdrop=m.dropout,
        bos_token_id=m.vocab_size - 1,
        eos_token_id=m.vocab_size - 1,
        attn_implementation="sdpa",
    )
    model = GPT2LMHeadModel(hf_cfg).to(device).train()
    opt = make_optimizer(model, cfg.train, device)

    def call(mdl, x, y):
        logits = mdl(input_ids=x).logits
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    return _peer_step(model, opt, batches, cfg, device, call)


def nanogpt_peer(path: str, cfg: RunConfig, batches, device):
    """nanoGPT's own GPT and its own configure_optimizers (so its CPU optimizer choice stands)."""
    if not (Path(path) / "model.py").is_file():
        raise FileNotFoundError(f"no model.py in {path} (--nanogpt takes a nanoGPT checkout)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", Path(path) / "model.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no model.py in {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m, t = cfg.model, cfg.train
    gpt_cfg = module.GPTConfig(
        block_size=m.context,
        vocab_size=m.vocab_size,
        n_layer=m.layers,
        n_head=m.heads,
        n_embd=m.dim,
        dropout=m.dropout,
        bias=m.bias,
    )
    model = module.GPT(gpt_cfg).to(device).train()
    opt = model.configure_optimizers(t.weight_decay, t.lr, (t.beta1, t.beta2), device.type)
    return _peer_step(model, opt, batches, cfg, device, lambda mdl, x, y: mdl(x, y)[1])


def bench_train(
    cfg: RunConfig,
    steps: int = 30,
    warmup: int = 5,
    rounds: int = 3,
    peer: bool = True,
    json_out: str | None = None,
    nanogpt: str | None = None,
) -> dict:
    """Time training steps of tfmr and its peers in alternating rounds; print a table."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg.train.steps = 10**9  # the schedule must not end inside the benchmark
        trainer = Trainer(cfg, tmp, progress=False, log=lambda *_: None)
        cfg = trainer.cfg  # resolved: the data's vocabulary size, which the peers take too
        device = trainer.device
        ours = precision(device, cfg.train.dtype)
        contenders = {f"tfmr ({ours})": trainer.train_step}
        precisions = {f"tfmr ({ours})": ours}  # each row's MFU is against the peak in its own dtype
        if ours != "fp32":  # show the fp32 figure beside it
            fp32 = copy.deepcopy(cfg)
            fp32.train.dtype = "float32"
            contenders["tfmr (fp32)"] = Trainer(
                fp32, Path(tmp) / "fp32", progress=False, log=lambda *_: None
            ).train_step
            precisions["tfmr (fp32)"] = "fp32"
        peer_batches = trainer.batches
        peer_precision = "bf16" if device.type == "cuda" else "fp32"
        if nanogpt:
            contenders[f"nanogpt ({peer_precision})"] = nanogpt_peer(
                nanogpt, cfg, peer_batches, device
            )
            precisions[f"nanogpt ({peer_precision})"] = peer_precision
        if peer:
            hf = hf_gpt2_peer(cfg, peer_batches, device)
            if hf is not None:
                contenders[f"hf-gpt2 ({peer_precision})"] = hf
                precisions[f"hf-gpt2 ({peer_precision})"] = peer_precision
        for fn in contenders.values():
            _time_steps(fn, warmup, device)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, fn in contenders.items():
                times[name] += _time_steps(fn, max(1, steps // rounds), device)
        peaks = {p: device_peak(device, p) for p in dict.fromkeys(precisions.values())}
        tokens = cfg.train.batch_size * cfg.train.grad_accum * trainer.batches.context
        flops_tok = trainer.model.flops_per_token(trainer.batches.context)
    rows = []
    base = statistics.median(next(iter(times.values())))
    for name, ts in times.items():
        med = statistics.median(ts)
        peak = peaks[precisions[name]][0]
        rows.append(
            {
                "name": name,
                "ms_per_step": med * 1e3,
                "tokens_per_s": tokens / med,
                "mfu": flops_tok * tokens / med / peak,
                "peak_flops": peak,
                "tfmr_speedup": med / base,
            }
        )
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "peaks": {p: {"flops": f, "is": what} for p, (f, what) in peaks.items()},
        "tokens_per_step": tokens,
        "steps_timed": len(next(iter(times.values()))),
        "model": to_dict(cfg.model),
        "rows": rows,
    }
    _print_table(result)
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))
    print(json.dumps({r["name"]: round(r["tokens_per_s"]) for r in rows}))
    return result


def _print_table(result: dict) -> None:
    print(
        f"device {result['device']} ({result['threads']} threads), torch {result['torch']}, "
        f"{result['tokens_per_step']} tokens/step, {result['steps_timed']} timed steps each"
    )
    for p, peak in result["peaks"].items():
        print(f"MFU of {p} rows is against: {peak['is']} = {peak['flops'] / 1e12:.2f} TFLOP/s")
    print(f"{'':18} {'ms/step':>9} {'tokens/s':>10} {'MFU':>7} {'tfmr is':>9}")
    for r in result["rows"]:
        print(
            f"{r['name']:18} {r['ms_per_step']:9.1f} {r['tokens_per_s']:10,.0f} {r['mfu'] * 100:6.1f}% "
            f"{r['tfmr_speedup']:8.2f}x"
        )
    sys.stdout.flush()


def add_arguments(p) -> None:
    config_flags(p)
    p.add_argument("--steps", type=positive_int, default=30, help="timed steps per contender")
    p.add_argument("--warmup", type=count, default=5, help="untimed steps per contender first")
    p.add_argument("--no-peer", action="store_true", help="skip the Hugging Face GPT-2 peer")
    p.add_argument("--nanogpt", help="path to a nanoGPT checkout: time its GPT in the same run")
    p.add_argument("--json", help="also write the results as JSON to this file")


def main(args) -> int:
    cfg = resolve_config(args)
    bench_train(
        cfg,
        steps=args.steps,
        warmup=args.warmup,
        peer=not args.no_peer,
        json_out=args.json,
        nanogpt=args.nanogpt,
    )
    return 0
