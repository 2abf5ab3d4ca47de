"""Scale-out: how the one training loop runs on one process, or on many under `torchrun`.

    train.parallel   none   one process (the default)
                     auto   ddp when started by torchrun with WORLD_SIZE > 1, else none
                     ddp    DistributedDataParallel: every rank holds the whole model, gradients
                            are averaged (all-reduce) once per optimizer step
                     fsdp   FSDP2 (`fully_shard`, each block then the whole model): weights,
                            gradients and optimizer moments sharded across ranks; checkpoints are
                            sharded too (torch.distributed.checkpoint)

`TrainLoop` talks to one `Parallel` object (the seam): `wrap` the model, `micro_step(last)` around
each micro-batch (gradients synchronise on the last one only), `mean` of a number across ranks,
`barrier`, `main_first` (rank 0 prepares shared files before the others read them), `close`.

The batch: `train.batch_size` is the *global* micro-batch. Every rank draws the same random
windows (one shared sampler seed) and keeps its own disjoint slice of `batch_size / world` rows,
so N processes take exactly the steps one process takes with the same config, and a run saved by
N processes resumes with M (or as one process) on the same data.

Only rank 0 logs, draws the progress bar, writes metrics.jsonl, the loss plot and (under ddp and
none) the checkpoint. Under fsdp every rank writes its own shard of the checkpoint into a shared
temporary folder, which rank 0 then renames into place (`save_sharded`); `load_sharded` reads such a
checkpoint into a model sharded over any number of ranks, or into a plain model in one process,
and `consolidate` turns one into a plain single-file checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from . import checkpoint
from .config import ConfigError

PARALLEL = ("none", "auto", "ddp", "fsdp")
SHARDED = (
    checkpoint.SHARDED
)  # in a sharded checkpoint: the format and the number of ranks that wrote it


TORCHRUN = (
    "WORLD_SIZE",
    "RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)  # what torchrun sets for every process


def launched() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's environment; (0, 0, 1) outside torchrun. A
    WORLD_SIZE left in the shell without the rest of torchrun's variables is not a launch (a note
    says it is ignored); a value that is not a number is a ConfigError."""
    env = os.environ
    if not all(name in env for name in TORCHRUN):
        if env.get("WORLD_SIZE", "1") != "1":
            print(
                f"note: WORLD_SIZE={env['WORLD_SIZE']} is set but this is no torchrun launch (no "
                "RANK / MASTER_ADDR / MASTER_PORT); training in one process",
                file=sys.stderr,
            )
        return 0, 0, 1
    try:
        rank, local, world = int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"])
    except ValueError:
        raise ConfigError(
            "RANK, LOCAL_RANK and WORLD_SIZE must be integers (torchrun sets them)"
        ) from None
    if not (world >= 1 and 0 <= rank < world and local >= 0):
        raise ConfigError(f"RANK={rank} and WORLD_SIZE={world} do not describe a torchrun launch")
    return rank, local, world


class Parallel:
    """One process: the whole model, the whole batch, nothing to synchronise."""

    kind = "none"
    shards_checkpoints = (
        False  # whether checkpoints are written by every rank (torch.distributed.checkpoint)
    )

    def __init__(self, device: torch.device, timeout: float = 600.0):
        self.device = device
        self.rank, self.local_rank, self.world = 0, 0, 1
        self.loss_scale = 1.0  # what a micro-batch's loss is multiplied by before backward

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """Prepare `model` (in place where the strategy shards it); returns what to call forward on."""
        return model

    def micro_step(self, last: bool):
        """Context for one micro-batch's forward and backward; gradients sync when `last`."""
        return contextlib.nullcontext()

    def mean(self, value: float) -> float:
        return value

    def barrier(self) -> None:
        pass

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the body first (preparing shared files: the token cache), the others after."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def shard(self, rows: int) -> slice:
        """This rank's rows of a global batch of `rows`."""
        if rows % self.world:
            raise ConfigError(
                f"train.batch_size {rows} is the global batch; it must divide evenly among "
                f"{self.world} processes"
            )
        per = rows // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def close(self) -> None:
        pass


class Distributed(Parallel):
    """What ddp and fsdp share: a process group (NCCL on CUDA, gloo on CPU) with a timeout, so a
    rank that dies makes the others fail with an error instead of waiting for ever."""

    def __init__(self, device: torch.device, timeout: float = 600.0):
        import torch.distributed as dist

        super().__init__(device, timeout)
        self.rank, self.local_rank, self.world = launched()
        if device.type == "cuda":
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
        self.dist = dist

    def mean(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        self.dist.barrier()

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


class DDP(Distributed):
    """DistributedDataParallel: the whole model on every rank, gradients averaged by all-reduce."""

    kind = "ddp"

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.wrapper = DistributedDataParallel(model, device_ids=ids)
        return self.wrapper

    def micro_step(self, last: bool):
        return contextlib.nullcontext() if last else self.wrapper.no_sync()


class FSDP(Distributed):
    """FSDP2: `fully_shard` on each block, then on the whole model (bf16 compute with fp32
    gradient reduction on CUDA); checkpoints through torch.distributed.checkpoint."""

    kind = "fsdp"
    shards_checkpoints = True

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        kwargs = {}
        if self.device.type == "cuda":
            kwargs["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=torch.bfloat16, reduce_dtype=torch.float32
            )
        for block in [*getattr(model, "encoder", []), *model.blocks]:
            fully_shard(block, **kwargs)
        fully_shard(model, **kwargs)
        self.model = model
        self.loss_scale = 1.0 / self.world if self.sums_gradients() else 1.0
        return model

    def sums_gradients(self) -> bool:
        """Whether FSDP2 sums gradients across ranks instead of averaging them (pytorch issue
        162338: some versions did so on gloo). Probed once on a one-weight model: every rank's
        gradient is 1, so the average is 1 and the sum is the world size."""
        from torch.distributed.fsdp import fully_shard

        probe = nn.Linear(self.world, 1, bias=False, device=self.device)
        fully_shard(probe)
        probe(torch.ones(1, self.world, device=self.device)).sum().backward()
        grad = probe.weight.grad.full_tensor()
        return bool(torch.allclose(grad, torch.full_like(grad, float(self.world))))

    def micro_step(self, last: bool):
        self.model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()


STRATEGIES = {"none": Parallel, "ddp": DDP, "fsdp": FSDP}


def resolve_kind(kind: str) -> str:
    """`train.parallel` as a strategy name: auto is ddp under torchrun with more than one process."""
    if kind not in PARALLEL:
        raise ConfigError(f"train.parallel {kind!r} is not one of: {', '.join(PARALLEL)}")
    if kind == "auto":
        return "ddp" if launched()[2] > 1 else "none"
    if kind != "none" and not all(name in os.environ for name in TORCHRUN):
        raise ConfigError(
            f"train.parallel={kind} needs a torchrun launch (WORLD_SIZE unset), e.g. "
            f"torchrun --standalone --nproc_per_node 2 -m tfmr lm train --set train.parallel={kind}"
        )
    return kind


def make(kind: str, device: torch.device, timeout: float = 600.0) -> Parallel:
    return STRATEGIES[resolve_kind(kind)](device, timeout)


# ----------------------------------------------------------------------------- activation checkpointing
def checkpoint_activations(model: nn.Module) -> nn.Module:
    """Recompute each block's activations in the backward pass instead of keeping them
    (torch.utils.checkpoint, non-reentrant): less memory, about one more forward of compute.
    Only the block's `forward` changes; names, weights and results stay the same."""
    from torch.utils.checkpoint import checkpoint as recompute

    for block in [*getattr(model, "encoder", []), *model.blocks]:
        plain = block.forward

        def forward(*args, _plain=plain, **kwargs):
            if not torch.is_grad_enabled():
                return _plain(*args, **kwargs)
            return recompute(_plain, *args, use_reentrant=False, **kwargs)

        block.forward = forward
    return model


# ----------------------------------------------------------------------------- sharded checkpoints
def is_sharded(directory: str | Path) -> bool:
    return (checkpoint.resolve(directory) / SHARDED).exists()


@contextlib.contextmanager
def _one_process_quiet():
    """torch.distributed.checkpoint in a process without a process group (consolidate, a plain
    resume) warns that it assumes one process on every call; that is the intent here, so the
    warning is filtered. Any other warning passes."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "torch.distributed is disabled, unavailable or uninitialized", UserWarning
        )
        yield


def _state(model: nn.Module, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    return {"model": msd, "optim": osd}


def save_sharded(
    par: Parallel,
    directory: str | Path,
    model: nn.Module,
    optimizer,
    config: dict,
    tokenizer,
    tensors: dict,
    extra: dict,
) -> Path:
    """Every rank writes its shard of weights and optimizer moments (torch.distributed.checkpoint)
    into DIRECTORY.tmp; rank 0 adds the config, tokenizer, training state and `sharded.json`, then
    the manifest, and swaps the folder into place as `checkpoint.save` does: a crash at any point
    leaves the previous checkpoint whole."""
    import torch.distributed.checkpoint as dcp

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if par.is_main:
        checkpoint._fresh_tmp(directory)
    par.barrier()
    with _one_process_quiet():
        dcp.save(_state(model, optimizer), checkpoint_id=str(tmp))
    par.barrier()
    if par.is_main:
        with checkpoint._writing(tmp, directory):
            (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
            if tokenizer is not None:
                tokenizer.save(tmp)
            checkpoint.save_file(dict(tensors), str(tmp / "state.safetensors"))
            (tmp / "state.json").write_text(json.dumps(extra, indent=2))
            (tmp / SHARDED).write_text(
                json.dumps({"format": "torch.distributed.checkpoint", "world": par.world})
            )
            checkpoint._commit(tmp, directory)
    par.barrier()
    return directory


def load_sharded(directory: str | Path, model: nn.Module, optimizer=None) -> None:
    """Read a sharded checkpoint into `model` (and `optimizer`): sharded over this run's ranks, or
    plain in one process without a process group. The number of ranks that wrote it does not matter."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    directory = checkpoint.verify(directory)
    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import (
            get_model_state_dict,
            set_model_state_dict,
        )

        state = {"model": get_model_state_dict(model)}
        with _one_process_quiet():
            dcp.load(state, checkpoint_id=str(directory))
        set_model_state_dict(model, state["model"])
        return
    msd, osd = get_state_dict(model, optimizer)
    state = {"model": msd, "optim": osd}
    try:
        with _one_process_quiet():
            dcp.load(state, checkpoint_id=str(directory))
    except Exception as e:  # a checkpoint of another model: DCP says which keys are missing
        raise checkpoint.CheckpointError(
            f"cannot read the sharded checkpoint {directory}: {str(e).splitlines()[0]}"
        ) from None
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )


def consolidate(source: str | Path, directory: str | Path, build, make_optimizer=None) -> Path:
    """Turn the sharded checkpoint `source` into a plain one (checkpoint.save's format) at
    `directory`, in one process: `build(model_config_dict)` makes the model; with
    `make_optimizer(model)` the optimizer moments come too, so the plain copy can resume."""
    from .tokenizers import load as load_tokenizer

    source = checkpoint.verify(source)
    if not (source / SHARDED).exists():
        raise checkpoint.CheckpointError(
            f"{source} is not a sharded checkpoint (no {SHARDED}); it is plain already"
        )
    directory = Path(directory)
    if directory.resolve() == source.resolve():
        raise checkpoint.CheckpointError(
            "write the plain checkpoint to another folder than the sharded one"
        )
    config = json.loads((source / "config.json").read_text())
    model = build(config["model"])
    optimizer = make_optimizer(model) if make_optimizer else None
    load_sharded(source, model, optimizer)
    tensors, plain = checkpoint.load_state(source)
    tokenizer = load_tokenizer(source) if (source / "tokenizer.json").exists() else None
    if optimizer is None:  # weights only: a model to generate from, evaluate or fine-tune
        return checkpoint.save(directory, model, config, tokenizer)
    return checkpoint.save(directory, model, config, tokenizer, optimizer, tensors, plain)
