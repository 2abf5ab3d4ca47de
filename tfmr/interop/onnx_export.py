"""Export a decoder-only tfmr model to ONNX: a prefill graph and a one-token cached step graph.

    from tfmr.interop.onnx_export import export_decoder
    export_decoder(model, "out/")     # out/prefill.onnx, out/step.onnx

    prefill.onnx   input_ids (batch, seq)                       -> logits (batch, seq, vocab),
                                                                   present.{i}.key / .value (batch, kv_heads, seq, head_dim)
    step.onnx      input_ids (batch, 1), past.{i}.key / .value  -> logits (batch, 1, vocab),
                   (batch, kv_heads, past, head_dim)               present.{i}.key / .value (..., past + 1, ...)

batch, seq and past are dynamic axes. The graphs run the model's own forward: a `ConcatCache`
stands in for the KV cache (same `update` protocol as cache.KVCache, but it appends to the past it
was given), so nothing here re-implements the model. The exporter is torch's TorchScript-based
`torch.onnx.export(dynamo=False)`, which needs no network and no onnxscript; the dynamo exporter
also works but takes minutes on a small CPU. After export, when onnxruntime is installed, both
graphs are run at another batch size and length and compared with the model (atol 1e-4); a
mismatch (a variant whose shape logic the trace froze, such as a sliding-window mask) removes the
files and says so. Left out: encoder-decoder models (refused), a static-cache graph for GPUs.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..cache import Placement
from ..config import ConfigError


class ConcatCache(Placement):
    """A KV cache over given past keys / values: `update` appends the new ones (B, H_kv, T, D);
    `place` (cache.Placement) rotates at absolute positions first, as the model's own cache does."""

    key_start = 0

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v

    def update(self, k: torch.Tensor, v: torch.Tensor, start):
        self.k, self.v = torch.cat([self.k, k], 2), torch.cat([self.v, v], 2)  # (B, H_kv, past + T, D)
        return self.k, self.v


class _Graph(torch.nn.Module):
    """forward(input_ids, *past) -> (logits, *present), past and present flattened (k0, v0, k1, v1, ...)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        attn = model.blocks[0].attn
        self.kv_heads, self.head_dim = attn.kv_heads, attn.head_dim

    def forward(self, input_ids, *past):
        if not past:  # prefill: an empty past, sized from the input so the batch stays dynamic
            empty = self.model.tok_emb.weight.new_zeros(input_ids.shape[0], self.kv_heads, 0, self.head_dim)
            past = (empty,) * (2 * len(self.model.blocks))
        caches = [ConcatCache(past[2 * i], past[2 * i + 1]) for i in range(len(self.model.blocks))]
        logits = self.model(input_ids, cache=caches, start=past[0].shape[2]).logits
        return (logits, *[t for c in caches for t in (c.k, c.v)])


def _names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def export_decoder(model, out, check: bool = True) -> list[Path]:
    """Write prefill.onnx and step.onnx for a decoder-only `model` into the folder `out`."""
    if model.cfg.arch != "decoder":
        raise ConfigError(f"ONNX export covers decoder-only models; this one is {model.cfg.arch}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graph = _Graph(model.float().eval())
    layers = len(model.blocks)
    present = _names(layers, "present")
    kv_axes = {0: "batch", 2: "past"}
    ids = torch.zeros(2, 4, dtype=torch.long)
    past = [torch.zeros(2, graph.kv_heads, 4, graph.head_dim) for _ in range(2 * layers)]
    paths = [out / "prefill.onnx", out / "step.onnx"]
    with torch.no_grad():
        torch.onnx.export(graph, (ids,), str(paths[0]), dynamo=False, input_names=["input_ids"],
                          output_names=["logits", *present],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"},
                                        **{n: {0: "batch", 2: "seq"} for n in present}})
        torch.onnx.export(graph, (ids[:, :1], *past), str(paths[1]), dynamo=False,
                          input_names=["input_ids", *_names(layers, "past")], output_names=["logits", *present],
                          dynamic_axes={"input_ids": {0: "batch"}, "logits": {0: "batch"},
                                        **{n: kv_axes for n in _names(layers, "past")}, **{n: kv_axes for n in present}})
    if check:
        _check(graph, paths)
    return paths


@torch.no_grad()
def _check(graph, paths: list[Path]) -> None:
    """Run both graphs with onnxruntime at a batch and length other than the traced ones."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    ids = torch.arange(3 * 7).remainder(graph.model.cfg.vocab_size).view(3, 7)  # (B, T)
    ref = graph(ids)
    prefill = ort.InferenceSession(str(paths[0]), providers=["CPUExecutionProvider"])
    got = prefill.run(None, {"input_ids": ids.numpy()})
    step = ort.InferenceSession(str(paths[1]), providers=["CPUExecutionProvider"])
    names = [i.name for i in step.get_inputs()]
    nxt = ids[:, -1:]
    ref_step = graph(nxt, *ref[1:])
    got_step = step.run(None, dict(zip(names, [nxt.numpy(), *[t.numpy() for t in ref[1:]]])))
    for ours, theirs in ((ref, got), (ref_step, got_step)):
        if not all(torch.allclose(a, torch.from_numpy(b), atol=1e-4, rtol=1e-4) for a, b in zip(ours, theirs)):
            for p in paths:
                p.unlink(missing_ok=True)
            raise ConfigError("the ONNX graphs do not reproduce the model at another batch size and length "
                              "(a setting the trace froze); the files were removed")
