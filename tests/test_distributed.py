"""Scale-out (tfmr/parallel.py) on CPU: torchrun with 2 gloo processes against one process.

Each torchrun test starts real processes (`python -m torch.distributed.run`, under `nice`) running
tests/dist_worker.py on a 1-layer, dim-32 model for a few steps. The reference is the same config
trained in this process with train.parallel=none. Tolerance (fp32; only the order of the gradient
reduction differs between the runs): losses and weights agree to 1e-5 absolute (measured: 3e-6
after 5 steps). The model has no biases: the key projection's bias has a gradient of exactly zero
in exact arithmetic (softmax ignores a constant added to every score), so its rounding noise,
scaled up to whole AdamW steps, would differ by up to lr per step between any two runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tfmr import checkpoint, parallel
from tfmr.builder import build_model
from tfmr.cli import main
from tfmr.config import ConfigError, ModelConfig, from_dict, to_dict
from tfmr.data import Batches
from tfmr.loop import CompiledOrEager
from tfmr.presets import tiny
from tfmr.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("dist_worker.py")
ATOL = 1e-5
HANG = (
    600  # seconds: a launch still running then is a hang (a launch takes 10-20 s on 2 idle cores)
)

pytestmark = pytest.mark.slow


def small_cfg(tmp_path: Path, text_file: Path, kind: str, steps: int):
    cfg = tiny()
    cfg.model.dim, cfg.model.layers, cfg.model.heads, cfg.model.context, cfg.model.bias = (
        32,
        1,
        2,
        16,
        False,
    )
    cfg.data.path, cfg.data.cache_dir = str(text_file), str(tmp_path / "cache")
    t = cfg.train
    t.steps, t.batch_size, t.grad_accum, t.warmup, t.lr, t.min_lr = (
        steps,
        4,
        2,
        0,
        1e-2,
        1e-2,
    )  # constant lr
    t.eval_every = t.checkpoint_every = 10**6
    t.eval_iters, t.log_every, t.device, t.threads, t.parallel = 1, 1, "cpu", 1, kind
    return cfg


def env() -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(name, None)
    return e


def torchrun(
    cfg,
    out: Path,
    *extra: str,
    launch=("--standalone", "--nproc_per_node", "2"),
    timeout=HANG,
    check=True,
) -> subprocess.CompletedProcess:
    config = out.with_name(out.name + ".json")
    config.write_text(json.dumps(to_dict(cfg)))
    cmd = [
        "nice",
        "-n",
        "19",
        sys.executable,
        "-m",
        "torch.distributed.run",
        *launch,
        str(WORKER),
        str(config),
        str(out),
        *extra,
    ]
    done = run_group(cmd, timeout)
    if check and done.returncode:
        raise AssertionError(
            f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def run_group(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run `cmd` in its own process group; past `timeout`, kill the whole group (torchrun's
    workers too) and fail."""
    proc = subprocess.Popen(
        cmd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"timed out after {timeout} s:\n{out[-2000:]}\n{err[-2000:]}"
        ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def one_process(cfg, out: Path, resume: bool = False) -> dict:
    Trainer(cfg, out, resume=resume, progress=False, log=lambda *a: None).fit()
    return load_file(str(out / "checkpoint" / "model.safetensors"))


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=ATOL, rtol=0), (
            name,
            (a[name] - b[name]).abs().max(),
        )


def plain_weights(ckpt: Path, tmp_path: Path, cli: bool = False) -> dict:
    """A sharded checkpoint's weights, through `parallel.consolidate` (weights only) or through
    `tfmr checkpoint consolidate` (with the optimizer)."""
    out = tmp_path / f"plain-{time.monotonic_ns()}"
    if cli:
        assert main(["checkpoint", "consolidate", str(ckpt), "--out", str(out)]) == 0
        assert checkpoint.load_state(out)[1]["optimizer"]["state"]  # the moments came too
    else:
        parallel.consolidate(ckpt, out, build=lambda m: build_model(from_dict(ModelConfig, m)))
    return load_file(str(out / "model.safetensors"))


def test_ddp_matches_one_process_and_only_rank0_writes(tmp_path, text_file):
    """2 ranks x 2 rows x 2 micro-batches (gradients synced once per step) = one process with
    batch 4 x 2 micro-batches: same losses, same weights; then the 2-process checkpoint resumes
    in one process exactly."""
    ref = one_process(small_cfg(tmp_path, text_file, "none", 3), tmp_path / "ref")
    cfg = small_cfg(tmp_path, text_file, "ddp", 3)
    torchrun(cfg, tmp_path / "ddp", "--audit")  # rank 1 fails on any write under its --out
    assert_same_weights(load_file(str(tmp_path / "ddp" / "checkpoint" / "model.safetensors")), ref)
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "ref"), abs=ATOL)
    assert not (tmp_path / "ddp" / "run.lock").exists()
    ref5 = one_process(small_cfg(tmp_path, text_file, "none", 5), tmp_path / "ref5")
    resumed = one_process(small_cfg(tmp_path, text_file, "none", 5), tmp_path / "ddp", resume=True)
    assert_same_weights(resumed, ref5)


def test_fsdp_matches_one_process_and_resumes_in_1_and_2(tmp_path, text_file):
    """FSDP2 on gloo averages gradients (pytorch issue 162338: some versions summed them): 2
    sharded steps = 2 single-process steps. The sharded checkpoint resumes to step 4 in one
    process and in two, both equal to an uninterrupted 4-step run."""
    torchrun(small_cfg(tmp_path, text_file, "fsdp", 2), tmp_path / "fsdp")
    ckpt = tmp_path / "fsdp" / "checkpoint"
    assert json.loads((ckpt / parallel.SHARDED).read_text())["world"] == 2
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= set(os.listdir(ckpt))
    checkpoint.verify(ckpt)  # the manifest covers every shard
    with pytest.raises(checkpoint.CheckpointError, match="tfmr checkpoint consolidate"):
        checkpoint.load_weights(
            ckpt, build_model(from_dict(ModelConfig, checkpoint.read_config(ckpt)["model"]))
        )
    ref2 = one_process(small_cfg(tmp_path, text_file, "none", 2), tmp_path / "ref2")
    assert_same_weights(plain_weights(ckpt, tmp_path), ref2)
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(tmp_path / "ref2"), abs=ATOL)

    ref4 = one_process(small_cfg(tmp_path, text_file, "none", 4), tmp_path / "ref4")
    shutil.copytree(tmp_path / "fsdp", tmp_path / "as-one")
    assert_same_weights(
        one_process(small_cfg(tmp_path, text_file, "none", 4), tmp_path / "as-one", resume=True),
        ref4,
    )
    torchrun(small_cfg(tmp_path, text_file, "fsdp", 4), tmp_path / "fsdp", "--resume")
    assert_same_weights(plain_weights(ckpt, tmp_path, cli=True), ref4)
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(tmp_path / "ref4"), abs=ATOL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_by_c10d_rendezvous(tmp_path, text_file):
    """Two torchrun agents (`--nnodes 2`, node ranks 0 and 1) meet at a c10d rendezvous on this
    machine, train and save; the node-1 rank writes nothing under --out."""
    cfg = small_cfg(tmp_path, text_file, "ddp", 2)
    out, port = tmp_path / "nodes", free_port()
    (tmp_path / "nodes.json").write_text(json.dumps(to_dict(cfg)))
    agents = []
    for node in (0, 1):
        cmd = [
            "nice",
            "-n",
            "19",
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--nproc_per_node",
            "1",
            "--node_rank",
            str(node),
            "--rdzv_backend",
            "c10d",
            "--rdzv_endpoint",
            f"127.0.0.1:{port}",
            "--rdzv_id",
            "tfmr-test",
            str(WORKER),
            str(tmp_path / "nodes.json"),
            str(out),
            "--audit",
        ]
        agents.append(
            subprocess.Popen(
                cmd,
                env=env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    try:
        outputs = [a.communicate(timeout=HANG)[0] for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                os.killpg(a.pid, signal.SIGKILL)
    assert [a.returncode for a in agents] == [0, 0], outputs
    assert [
        json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
    ] == [1, 2]
    checkpoint.verify(out / "checkpoint")


def test_a_dead_rank_stops_the_others(tmp_path, text_file):
    """Rank 1 exits before step 2: torchrun stops rank 0 too and says which rank failed (no
    hang: `torchrun` fails past HANG seconds)."""
    cfg = small_cfg(tmp_path, text_file, "ddp", 5)
    cfg.train.parallel_timeout = 30
    done = torchrun(cfg, tmp_path / "dead", "--die-rank", "1", "--die-at", "2", check=False)
    assert done.returncode != 0
    assert "rank 1: dying before step 2" in done.stdout
    assert "ChildFailedError" in done.stderr and "exitcode" in done.stderr


def test_the_write_audit_catches_a_write(tmp_path, monkeypatch):
    """The --audit hook the two tests above rely on does fail a write under the folder."""
    sys.path.insert(0, str(WORKER.parent))
    from dist_worker import forbid_writes_under

    monkeypatch.setenv("RANK", "1")
    forbid_writes_under(
        tmp_path / "guarded"
    )  # (a hook cannot be removed; this folder is never used again)
    with pytest.raises(RuntimeError, match="rank 1"):
        open(tmp_path / "guarded" / "f.txt", "w")
    with pytest.raises(RuntimeError, match="rank 1"):
        (tmp_path / "guarded").mkdir()
    (tmp_path / "elsewhere.txt").write_text("fine")


def test_auto_is_none_outside_torchrun_and_ddp_needs_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    assert parallel.resolve_kind("auto") == "none"
    with pytest.raises(ConfigError, match="torchrun"):
        parallel.resolve_kind("fsdp")
    with pytest.raises(ConfigError, match="not one of"):
        parallel.resolve_kind("zero3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert parallel.resolve_kind("auto") == "none"  # a WORLD_SIZE left in the shell is no launch
    for name, value in (("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")):
        monkeypatch.setenv(name, value)
    assert parallel.resolve_kind("auto") == "ddp"


def test_ranks_split_one_global_batch():
    """Each rank keeps its own rows of the same draw: together they are the one-process batch."""
    ids = torch.arange(1000).numpy()
    whole = Batches(ids, 8, 6, seed=3).next()[0]
    parts = []
    for rank in range(3):
        p = parallel.Parallel(torch.device("cpu"))
        p.rank, p.world = rank, 3
        parts.append(Batches(ids, 8, 6, seed=3, rows=p.shard(6)).next()[0])
    assert torch.equal(torch.cat(parts), whole)
    p.world = 4
    with pytest.raises(ConfigError, match="divide evenly"):
        p.shard(6)


def test_activation_checkpointing_gives_the_same_gradients():
    cfg = tiny().model
    cfg.vocab_size, cfg.dropout = 50, 0.0
    x = torch.randint(0, 50, (2, 16))
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg)
        if recompute:
            parallel.checkpoint_activations(model)
        model(x, x).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_compile_failure_falls_back_to_eager_and_says_why(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler found\nmore lines")

    monkeypatch.setattr(torch, "compile", lambda module: broken)
    notes = []
    model = torch.nn.Linear(2, 2)
    forward = CompiledOrEager(model, notes.append)
    x = torch.ones(1, 2)
    assert torch.equal(forward(x), model(x)) and torch.equal(forward(x), model(x))
    assert notes == [
        "note: torch.compile failed (RuntimeError: no C compiler found); "
        "training continues without compiling"
    ]


def test_consolidate_refuses_a_plain_checkpoint(tmp_path, text_file, capsys):
    cfg = small_cfg(tmp_path, text_file, "none", 1)
    one_process(cfg, tmp_path / "run")
    assert (
        main(
            [
                "checkpoint",
                "consolidate",
                str(tmp_path / "run" / "checkpoint"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "tfmr: error:" in capsys.readouterr().err
    with pytest.raises(checkpoint.CheckpointError, match="not a sharded checkpoint"):
        parallel.consolidate(tmp_path / "run" / "checkpoint", tmp_path / "x", build=build_model)


def test_chunked_cross_entropy_equals_plain_cross_entropy():
    """model.loss_chunk: the same loss and gradients as whole-logits cross entropy, with an
    ignored target and a chunk that does not divide the tokens."""
    cfg = tiny().model
    cfg.vocab_size, cfg.label_smoothing = 97, 0.1
    x = torch.randint(0, 97, (3, 11))
    y = x.roll(-1, 1)
    y[0, :4] = -100
    results = []
    for chunk in (0, 7):
        cfg.loss_chunk = chunk
        torch.manual_seed(0)
        model = build_model(cfg)
        out = model(x, y)
        out.loss.backward()
        results.append(
            (out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
        )
    plain = torch.nn.functional.cross_entropy(
        model(x).logits.flatten(0, 1), y.flatten(), ignore_index=-100, label_smoothing=0.1
    )
    assert torch.allclose(results[0][0], plain, atol=1e-6) and torch.allclose(
        results[1][0], plain, atol=1e-6
    )
    for name, grad in results[0][1].items():
        assert torch.allclose(grad, results[1][1][name], atol=1e-6), name


def test_scale_presets_have_their_published_shapes():
    from tfmr.presets import get

    gpt2, llama = get("gpt2-124m").model, get("llama-124m").model
    assert (gpt2.layers, gpt2.heads, gpt2.dim, gpt2.context, gpt2.vocab_size) == (
        12,
        12,
        768,
        1024,
        50304,
    )
    assert (llama.layers, llama.heads, llama.kv_heads, llama.dim) == (12, 12, 4, 768)
    assert (llama.pos.kind, llama.norm.kind, llama.ffn.kind, llama.ffn.options["hidden"]) == (
        "rope",
        "rmsnorm",
        "swiglu",
        2048,
    )
    model = build_model(llama)
    # 12 x (attention 768 x (768 + 2 x 256 + 768) + SwiGLU 3 x 768 x 2048 + 2 norms) + the final norm
    assert model.num_params() == 12 * (768 * 2048 + 3 * 768 * 2048 + 2 * 768) + 768
