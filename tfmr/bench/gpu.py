"""The GPU benchmark in one command: training, decoding, attention kernels, MoE dispatch.

    tfmr bench gpu [--out runs/bench_gpu] [--minutes 8] [--nanogpt PATH]   # on a CUDA GPU
    tfmr bench gpu --quick                                                   # CPU, tiny shapes (smoke run)

Sections, each beside its peers measured in the same run (a section that fails is reported with
its error; the others still run):

    train      steps/s and tokens/s at GPT-2 124M (preset gpt2-124m) and the Llama shape
               (preset llama-124m), batch 12 x 1024, bf16 autocast, fused AdamW: tfmr's training
               step (make_optimizer + accumulate_gradients, torch.compile on GPU) beside a
               nanoGPT-architecture model (written here: fused qkv, SDPA, GELU MLP, tied head;
               or nanoGPT's own with --nanogpt), Hugging Face GPT2LMHeadModel and
               LlamaForCausalLM (SDPA, eager) when transformers is installed
    decode     `tfmr bench gpu-decode`: GPT-2 124M greedy and beam 4 beside HF generate; the
               gpt-fast stories110M shape
    attention  `tfmr bench gpu-attention`: tfmr's kernels beside SDPA flash
    moe        `tfmr bench moe-dispatch`: an MoE layer beside a dense FFN of the same active size

Everything goes to OUT.json and a markdown table in OUT.md (section outputs beside them in OUT/).
The whole run is time-boxed (--minutes, default 8): each section gets what is left, shared among
the sections still to run, and one that overruns its share is stopped and reported as such.
Published peer figures (docs/benchmarks.md) are quoted there, never taken as this run's results.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import signal
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..builder import build_model
from ..config import RunConfig
from ..devices import precision
from ..loop import CompiledOrEager, accumulate_gradients, make_optimizer
from ..presets import get as preset
from . import gpu_attention, gpu_decode, moe_dispatch
from .train import _sync, _time_steps, device_peak


class TimeBox(Exception):
    """A section ran past its share of the time box."""


@contextlib.contextmanager
def time_box(seconds: float):
    """Raise TimeBox in this (main) thread after `seconds`."""

    def expire(signum, frame):
        raise TimeBox(f"stopped after {seconds:.0f} s (its share of --minutes)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1.0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------- train
class NanoGPTBlock(nn.Module):
    """nanoGPT's block layout: LayerNorm, fused qkv projection, causal SDPA, GELU MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.c_attn, self.c_proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.c_fc, self.mlp_proj = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)  # (B, T, C) each
        q, k, v = (
            t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v)
        )  # (B, H, T, hd)
        y = (
            F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        )  # (B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class NanoGPTStandIn(nn.Module):
    """A GPT-2 model laid out as nanoGPT lays it out (a stand-in when no nanoGPT checkout is given)."""

    def __init__(self, vocab: int, context: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
        self.h = nn.ModuleList(NanoGPTBlock(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, x, y):
        h = self.wte(x) + self.wpe(torch.arange(x.shape[1], device=x.device))
        for block in self.h:
            h = block(h)
        logits = self.lm_head(self.ln_f(h))  # (B, T, vocab)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def hf_model(kind: str, m):
    """A randomly initialised Hugging Face model of the same shape (None without transformers)."""
    try:
        import transformers as tr
    except ImportError:
        return None
    if kind == "gpt2":
        cfg = tr.GPT2Config(
            vocab_size=m.vocab_size,
            n_positions=m.context,
            n_embd=m.dim,
            n_layer=m.layers,
            n_head=m.heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        cfg._attn_implementation = "sdpa"
        return tr.GPT2LMHeadModel(cfg)
    cfg = tr.LlamaConfig(
        vocab_size=m.vocab_size,
        hidden_size=m.dim,
        intermediate_size=m.ffn.options["hidden"],
        num_hidden_layers=m.layers,
        num_attention_heads=m.heads,
        num_key_value_heads=m.kv_heads,
        max_position_embeddings=m.context,
        tie_word_embeddings=True,
    )
    cfg._attn_implementation = "sdpa"
    return tr.LlamaForCausalLM(cfg)


def train_contenders(cfg: RunConfig, family: str, nanogpt: str | None) -> dict:
    """name -> (model, loss(model, x, y)) for one shape."""
    m = cfg.model
    rows = {"tfmr": (build_model(m), lambda mdl, x, y: mdl(x, y).loss)}
    if family == "gpt2":
        if nanogpt:
            spec = importlib.util.spec_from_file_location(
                "nanogpt_model", Path(nanogpt) / "model.py"
            )
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            gpt = module.GPT(
                module.GPTConfig(
                    block_size=m.context,
                    vocab_size=m.vocab_size,
                    n_layer=m.layers,
                    n_head=m.heads,
                    n_embd=m.dim,
                    dropout=0.0,
                    bias=True,
                )
            )
            rows["nanogpt"] = (gpt, lambda mdl, x, y: mdl(x, y)[1])
        else:
            rows["nanogpt-arch"] = (
                NanoGPTStandIn(m.vocab_size, m.context, m.dim, m.layers, m.heads),
                lambda mdl, x, y: mdl(x, y),
            )
    hf = hf_model(family, m)
    if hf is not None:
        rows[f"hf-{family}"] = (
            hf,
            lambda mdl, x, y: F.cross_entropy(
                mdl(input_ids=x).logits.flatten(0, 1).float(), y.flatten()
            ),
        )
    return rows


def bench_train_shape(
    name: str, family: str, quick: bool, device, steps: int, compile_: bool, nanogpt: str | None
) -> list[dict]:
    cfg = preset(name)
    m, t = cfg.model, cfg.train
    if quick:
        m.dim, m.layers, m.heads, m.context, m.vocab_size = 64, 2, 4, 64, 256
        m.kv_heads = 2 if m.kv_heads else None
        if m.ffn.kind == "swiglu":
            m.ffn.options["hidden"] = 128
        t.batch_size = 2
    t.dtype = "auto"
    x = torch.randint(0, m.vocab_size, (t.batch_size, m.context), device=device)
    y = torch.randint(0, m.vocab_size, (t.batch_size, m.context), device=device)
    flops = build_model(m).flops_per_token(m.context)
    peak, peak_is = device_peak(device, precision(device, t.dtype))
    rows, times = [], {}
    for who, (model, loss_of) in train_contenders(cfg, family, nanogpt).items():
        model = model.to(device).train()
        opt = make_optimizer(model, t, device)
        forward = CompiledOrEager(model, log=print) if compile_ and who != f"hf-{family}" else model

        def step(model=model, opt=opt, forward=forward, loss_of=loss_of):
            accumulate_gradients(model, lambda: loss_of(forward, x, y), t, device)
            opt.step()
            opt.zero_grad(set_to_none=True)

        _time_steps(step, 1 if quick else 5, device)  # warm-up (compiles)
        times[who] = statistics.median(_time_steps(step, steps, device))
        del model, opt, forward
        if device.type == "cuda":
            torch.cuda.empty_cache()
    tokens = t.batch_size * m.context
    for who, s in times.items():
        rows.append(
            {
                "shape": name,
                "name": who,
                "ms_per_step": round(s * 1e3, 2),
                "tokens_per_s": round(tokens / s),
                "mfu": round(flops * tokens / s / peak, 4),
                "tfmr_speedup": round(s / times["tfmr"], 3),
                "peak": peak_is,
            }
        )
    return rows


def section_train(args, device, out: Path) -> dict:
    compile_ = device.type == "cuda" and not args.no_compile
    steps = 2 if args.quick else 20
    rows = []
    for name, family in (("gpt2-124m", "gpt2"), ("llama-124m", "llama")):
        rows += bench_train_shape(name, family, args.quick, device, steps, compile_, args.nanogpt)
    (out / "train.json").write_text(json.dumps(rows, indent=2))
    return {"compile": compile_, "steps_timed": steps, "rows": rows}


# ----------------------------------------------------------------------------- the other sections (reused benches)
def _args(module, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return p.parse_args(argv)


def section_decode(args, device, out: Path) -> dict:
    argv = ["--out", str(out / "decode.md")] + (["--quick", "--no-compile"] if args.quick else [])
    gpu_decode.main(_args(gpu_decode, argv))
    return json.loads((out / "decode.json").read_text())


def section_attention(args, device, out: Path) -> dict:
    argv = ["--out", str(out / "attention")] + (["--quick"] if args.quick else [])
    gpu_attention.main(_args(gpu_attention, argv))
    return json.loads((out / "attention.json").read_text())


def section_moe(args, device, out: Path) -> dict:
    if args.quick:
        argv = ["--tokens", "64", "--dim", "32", "--rounds", "1", "--iters", "1"]
    else:
        argv = ["--device", "cuda", "--dtype", "bfloat16", "--tokens", "16384", "--dim", "1024"]
    moe_dispatch.main(_args(moe_dispatch, argv + ["--json", str(out / "moe.json")]))
    return json.loads((out / "moe.json").read_text())


SECTIONS = {
    "train": section_train,
    "decode": section_decode,
    "attention": section_attention,
    "moe": section_moe,
}


# ----------------------------------------------------------------------------- report
def markdown(report: dict) -> str:
    lines = [
        f"# tfmr bench gpu: {report['device']}, torch {report['torch']}"
        f"{' (--quick: CPU smoke run, times mean nothing)' if report['quick'] else ''}",
        "",
    ]
    lines += ["| section | status | seconds |", "|---|---|---|"]
    lines += [
        f"| {name} | {s['status']} | {s['seconds']} |" for name, s in report["sections"].items()
    ]
    train = report["sections"].get("train", {}).get("result")
    if train:
        lines += [
            "",
            "## train (batch x context tokens per step, bf16 autocast on GPU)",
            "",
            "| shape | model | ms/step | tokens/s | MFU | tfmr is |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['shape']} | {r['name']} | {r['ms_per_step']} | {r['tokens_per_s']:,} | {r['mfu'] * 100:.1f}% "
            f"| {r['tfmr_speedup']:.2f}x |"
            for r in train["rows"]
        ]
    moe = report["sections"].get("moe", {}).get("result")
    if moe:
        lines += [
            "",
            "## moe (one layer, forward + backward)",
            "",
            "| layer | ms/call | tokens/s | vs dense |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['layer']} | {r['ms']:.2f} | {r['tokens_per_s']:,.0f} | {r['vs_dense']:.2f}x |"
            for r in moe["results"]
        ]
    for name, file in (("decode", "decode.md"), ("attention", "attention.md")):
        path = Path(report["out"]) / file
        if report["sections"].get(name, {}).get("status") == "ok" and path.exists():
            lines += ["", f"## {name}", "", path.read_text().strip()]
    return "\n".join(lines) + "\n"


def add_arguments(p) -> None:
    p.add_argument(
        "--out", default="runs/bench_gpu", help="OUT.json and OUT.md, section outputs in OUT/"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny shapes on CPU: every code path (smoke run)"
    )
    p.add_argument("--minutes", type=float, default=8.0, help="time box for the whole run")
    p.add_argument(
        "--only", nargs="*", choices=list(SECTIONS), default=None, help="run only these sections"
    )
    p.add_argument("--no-compile", action="store_true", help="train without torch.compile")
    p.add_argument(
        "--nanogpt", default=None, help="a nanoGPT checkout: time its GPT instead of the stand-in"
    )


def main(args) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if device.type == "cpu" and not args.quick:
        print("no CUDA device: running --quick instead (CPU times mean nothing)")
        args.quick = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "quick": args.quick,
        "out": str(out),
        "minutes": args.minutes,
        "sections": {},
    }
    todo = [name for name in SECTIONS if args.only is None or name in args.only]
    end = time.monotonic() + 60 * args.minutes
    for i, name in enumerate(todo):
        share = (end - time.monotonic()) / (len(todo) - i)
        t0 = time.monotonic()
        print(f"\n=== {name} (at most {share:.0f} s) ===", flush=True)
        try:
            with time_box(share):
                entry = {"status": "ok", "result": SECTIONS[name](args, device, out)}
        except TimeBox as e:
            entry = {"status": f"time box: {e}"}
        except Exception as e:  # noqa: BLE001 - a failed section is a result; the others still run
            if args.quick:
                raise
            entry = {
                "status": f"failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
            }
        entry["seconds"] = round(time.monotonic() - t0, 1)
        report["sections"][name] = entry
        _sync(device)
    path = out.with_suffix(".json")
    path.write_text(json.dumps(report, indent=2, default=str))
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    print("\n" + md + f"\nwritten: {path}, {out.with_suffix('.md')}")
    return 0
