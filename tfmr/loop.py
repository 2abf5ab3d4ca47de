"""The one training loop of tfmr (`TrainLoop`), written once for every task.

    TrainLoop      AdamW, warmup + cosine (by steps, or decayed over a wall-clock budget),
                   gradient accumulation, clipping, bf16 autocast, torch.compile, periodic
                   evaluation (the best weights kept in RUN/best/ with `train.keep_best`),
                   checkpoints that resume bit for bit, a progress bar, JSON-lines
                   metrics and a loss-curve PNG

A task specialises the loop by its data and its loss and nothing else, through five hooks:
`setup_data()` (set `self.batches`, the training sampler, and the model's vocabulary sizes),
`build_model()`, `batch_loss()` (one micro-batch's mean loss, through `self.forward`, the compiled
model when `train.compile`), `evaluate()` (a dict of numbers) and `vocabulary()` (what the
checkpoint keeps beside the weights). The language-model `Trainer` (train.py), sequence-to-sequence
training (`seq2seq.Seq2SeqTrainer`) and fine-tuning (LoRA, adapters) are such specialisations.
Training objectives (`train.objective`, objectives.py) are wired here once: a task calls
`setup_objective(model, task)` in `build_model` and `objective_loss(batch)` in `batch_loss`; a
running baseline is saved with the checkpoint.

The loop works on its own copy of the config it is given: what it resolves (vocabulary sizes, a
resumed run's saved model and data sections) goes into `self.cfg`, never into the caller's object.

What is saved makes a resumed run identical to an uninterrupted one on CPU: weights, optimizer
moments, the step and the seconds trained (a time budget resumes too), the torch RNG of the CPU
and of CUDA (dropout), and the sampler's state (`batches.state()`, a tensor). Evaluation reads
its own fixed batches, so it never disturbs training randomness. Not here: the run-folder lock
(runfolder.py), device and precision (devices.py), the learning-rate schedule (schedule.py),
scale-out (parallel.py), the loss-curve picture (viz.py).
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint, memory, parallel, schedule
from .builder import build_model
from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig, from_dict, to_dict
from .devices import DEVICES, DTYPES, autocast_for, resolve_device
from .ffn import expert_stats
from .folders import check_output, clear_run
from .model import Output
from .objectives import Objective, Task, build_objective
from .runfolder import claim_run_folder, release_run_folder
from .viz import plot_losses

ON_NONFINITE = ("stop", "skip")


def validate_train(t: TrainConfig) -> None:
    """Check the train section before any work starts."""
    if t.dtype not in DTYPES:
        raise ConfigError(f"train.dtype {t.dtype!r} is not one of: {', '.join(DTYPES)}")
    if t.device.split(":")[0] not in DEVICES:
        raise ConfigError(
            f"train.device {t.device!r} is not one of: {', '.join(DEVICES)} (cuda:N allowed)"
        )
    for name in (
        "steps",
        "batch_size",
        "grad_accum",
        "eval_every",
        "eval_iters",
        "log_every",
        "checkpoint_every",
    ):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1, got {getattr(t, name)}")
    if t.warmup < 0 or not t.lr > 0 or not t.min_lr >= 0:
        raise ConfigError(
            "train.warmup, train.lr and train.min_lr must be non-negative (lr positive)"
        )
    for name in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip", "max_minutes"):
        if not math.isfinite(getattr(t, name)):
            raise ConfigError(f"train.{name} must be a finite number, got {getattr(t, name)}")
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(t, name) < 1.0:
            raise ConfigError(
                f"train.{name} must be in [0, 1) (AdamW's moment decay), got {getattr(t, name)}"
            )
    for name in (
        "weight_decay",
        "grad_clip",
        "max_minutes",
        "threads",
        "warmup",
        "batch_tokens",
        "eval_pairs",
        "guided_attention",
    ):  # the last three: Seq2SeqTrainConfig's
        if getattr(t, name, 0) < 0:
            raise ConfigError(f"train.{name} must be 0 or more, got {getattr(t, name)}")
    if not 0 <= t.seed < 2**63:
        raise ConfigError(f"train.seed must be an integer in [0, 2**63), got {t.seed}")
    if t.on_nonfinite not in ON_NONFINITE:
        raise ConfigError(
            f"train.on_nonfinite {t.on_nonfinite!r} is not one of: {', '.join(ON_NONFINITE)}"
        )
    if t.keep_last < 0:
        raise ConfigError(
            f"train.keep_last must be 0 (off) or a number of checkpoints, got {t.keep_last}"
        )
    if not (math.isfinite(t.max_memory) and t.max_memory >= 0):
        raise ConfigError(
            f"train.max_memory must be 0 (no cap) or a number of GB, got {t.max_memory}"
        )
    if t.parallel not in parallel.PARALLEL:
        raise ConfigError(
            f"train.parallel {t.parallel!r} is not one of: {', '.join(parallel.PARALLEL)}"
        )
    if not (math.isfinite(t.parallel_timeout) and t.parallel_timeout > 0):
        raise ConfigError(
            f"train.parallel_timeout must be a positive number of seconds, got {t.parallel_timeout}"
        )
    if t.parallel == "fsdp" and (t.keep_last or t.keep_best):
        raise ConfigError(
            "train.keep_last and train.keep_best keep plain weights; with train.parallel=fsdp the "
            "checkpoint is sharded: leave them off (tfmr checkpoint consolidate makes a plain copy)"
        )


def prepare_run(
    t: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    main: bool = True,
    writes: str = "run",
) -> tuple[Path, torch.device, Path]:
    """What every trainer does first: check the train section and the run folder (tfmr.folders:
    a folder holding a run needs `resume` or `overwrite`; nothing is deleted here), claim it (see
    `claim_run_folder`), set threads. Returns (run folder, device, checkpoint folder). Under
    torchrun only the main process (rank 0) creates and claims the folder."""
    validate_train(t)
    out = Path(out_dir)
    check_output(out, writes, overwrite=overwrite, resume=resume)
    ckpt = out / "checkpoint"
    if resume and not ckpt.is_dir():
        raise ConfigError(f"nothing to resume: {ckpt} does not exist")
    if t.threads:
        torch.set_num_threads(t.threads)
    if not main:
        return out, resolve_device(t.device), ckpt
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the run folder {out}: {e.strerror}") from None
    claim_run_folder(out)
    return out, resolve_device(t.device), ckpt


def make_optimizer(
    model: torch.nn.Module, t: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only; fused kernel where available."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": t.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = {"lr": t.lr, "betas": (t.beta1, t.beta2)}
    if device.type in ("cuda", "cpu"):
        kwargs["fused"] = True
    try:
        return torch.optim.AdamW(groups, **kwargs)
    except (RuntimeError, TypeError):  # fused kernel missing for this device / build
        kwargs.pop("fused", None)
        return torch.optim.AdamW(groups, **kwargs)


def accumulate_gradients(
    model, micro_loss, t: TrainConfig, device: torch.device, par: parallel.Parallel | None = None
) -> tuple[float, float]:
    """The gradients of one optimizer step, summed over `t.grad_accum` micro-batches
    (`micro_loss()` returns one micro-batch's mean loss) and clipped to `t.grad_clip`; returns
    (mean loss, gradient norm before clipping). The weights are not touched. Under ddp / fsdp
    (`par`) gradients are synchronised once, on the last micro-batch, and the loss returned is
    the mean over all ranks."""
    par = par or parallel.Parallel(device)
    total = 0.0
    for i in range(t.grad_accum):
        with par.micro_step(last=i == t.grad_accum - 1):
            with autocast_for(device, t.dtype):
                loss = micro_loss() / t.grad_accum
            (loss * par.loss_scale).backward()
        total += loss.item()
    norm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf
    )
    if hasattr(norm, "full_tensor"):  # fsdp: a DTensor (already the norm over all shards)
        norm = norm.full_tensor()
    return par.mean(total), float(norm)


class CompiledOrEager:
    """`torch.compile(module)`, falling back to the eager module if compiling fails (no C compiler,
    an unsupported operation, an old GPU), with one line saying why; training goes on."""

    def __init__(self, module: torch.nn.Module, log=print):
        self.eager, self.log = module, log
        self.compiled = torch.compile(module)
        self.failed: str | None = None

    def __call__(self, *args, **kwargs):
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except (KeyboardInterrupt, ConfigError, torch.OutOfMemoryError):
                raise
            except Exception as e:  # torch._dynamo / inductor errors have no common public base
                reason = (str(e).strip().splitlines() or [""])[0][:300]
                self.failed = f"{type(e).__name__}: {reason}"
                self.log(
                    f"note: torch.compile failed ({self.failed}); training continues without compiling"
                )
        return self.eager(*args, **kwargs)


class NonFiniteError(ConfigError):
    """Training produced a non-finite loss or gradient norm (usually: the learning rate is too high)."""


class _CtrlC:
    """Ctrl-C while training: the first one asks the loop to stop once the current step is done
    (then it saves, so --resume is exact); a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step (press again to stop at once)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def same_vocabulary(mine, theirs) -> bool:
    """Whether two vocabularies (what `TrainLoop.vocabulary` returns: a tokenizer, a PairVocab)
    give every symbol the same id: the same class, and the files each saves equal byte for byte."""
    if type(mine) is not type(theirs):
        return False
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        mine.save(a)
        theirs.save(b)
        files = sorted(p.name for p in Path(a).iterdir())
        if files != sorted(p.name for p in Path(b).iterdir()):
            return False
        return all((Path(a) / f).read_bytes() == (Path(b) / f).read_bytes() for f in files)


def finite_json(record: dict) -> str:
    """One metrics line: strict JSON, non-finite numbers written as null."""
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }
    return json.dumps(clean, allow_nan=False)


class TrainLoop:
    """The training loop; a task subclasses it and fills in the hooks (see the module docstring).

    `cfg` has a `train` section (TrainConfig or a subclass) and a `model` section; it is saved
    whole with every checkpoint. With `resume`, the run's saved model and data sections win and
    the train section may be changed (more steps, a longer budget). A folder that holds a run is
    refused unless `resume` or `overwrite`; a lock keeps a second process out while this one
    trains (`runfolder.claim_run_folder`). The loop resolves its own copy, `self.cfg`; the
    caller's `cfg` is left as it was given."""

    resume_keeps = ("model", "data")  # config sections a resumed run takes from its checkpoint
    data_parallel = True  # the task splits its batches among ranks (train.parallel ddp / fsdp)
    writes = "run"  # what the run folder holds, for tfmr.folders (a fine-tuning run: "adapter")
    replaced_files: tuple[
        str, ...
    ] = ()  # files of the task's own that --overwrite removes with the old run
    objective: Objective | None = None  # train.objective, once `setup_objective` has run

    def __init__(
        self,
        cfg,
        out_dir: str | Path,
        resume: bool = False,
        log=print,
        progress: bool = True,
        overwrite: bool = False,
    ):
        cfg = copy.deepcopy(
            cfg
        )  # resolved here (vocabulary sizes, a resume's saved sections), not the caller's
        validate_train(cfg.train)
        for section in vars(
            cfg
        ).values():  # a task's own sections check themselves (DecodeConfig.check)
            if callable(getattr(section, "check", None)):
                section.check()
        if not self.data_parallel and parallel.resolve_kind(cfg.train.parallel) != "none":
            raise ConfigError(
                f"train.parallel={cfg.train.parallel}: {type(self).__name__} does not split its "
                "batches among processes yet; train it with train.parallel=none"
            )
        self.parallel = parallel.make(
            cfg.train.parallel, resolve_device(cfg.train.device), cfg.train.parallel_timeout
        )
        main = self.parallel.is_main
        self.cfg, self.log, self.progress = cfg, log if main else _silent, progress and main
        try:
            self.out, _, self.ckpt_dir = prepare_run(
                cfg.train, out_dir, resume, overwrite, main=main, writes=self.writes
            )
        except BaseException:
            self.parallel.close()
            raise
        self.device = self.parallel.device
        try:
            self._start(resume)
        except BaseException:  # refused or failed before training began: leave no lock behind
            release_run_folder(self.out)
            self.parallel.close()
            raise
        if overwrite and not resume and main:  # every check passed: only now is the old run removed
            clear_run(self.out, extra=self.replaced_files)

    def _start(self, resume: bool) -> None:
        """Data, memory check, model, optimizer and (when resuming) the saved state."""
        cfg = self.cfg
        self.torn, self.skipped_in_a_row = False, 0
        if resume:
            self.adopt_saved_config()
        self.tokens = 0  # tokens read by batch_loss since the last log line (for tokens/s)
        self.setup_data()
        self.check_memory()
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        self.model = self.build_model().to(self.device)
        if cfg.train.init and not resume:  # a resumed run's weights are in its checkpoint
            self.log(self.warm_start(cfg.train.init))
        if cfg.train.activation_checkpointing:
            parallel.checkpoint_activations(self.model)
        wrapped = self.parallel.wrap(
            self.model
        )  # ddp: a wrapper; fsdp: self.model, sharded in place
        self.optimizer = make_optimizer(self.model, cfg.train, self.device)
        self.step, self.seconds, self.history = 0, 0.0, []
        self.best: dict | None = (
            None  # train.keep_best: {"step", "value"} of the weights in RUN/best/
        )
        self.lr = schedule.lr_at(0, cfg.train)
        self.seed_rank()
        if resume:
            self.load_state()
        self.forward = CompiledOrEager(wrapped, self.log) if cfg.train.compile else wrapped

    # ------------------------------------------------------------------ hooks
    def setup_data(self) -> None:
        """Set `self.batches` (with next / state / load_state) and the model's vocabulary sizes."""
        raise NotImplementedError

    def build_model(self) -> torch.nn.Module:
        """A fresh model (fine-tuning loads a checkpoint and adds LoRA here)."""
        return build_model(self.cfg.model)

    def batch_loss(self) -> torch.Tensor:
        """The mean loss of one micro-batch, computed through `self.forward`; add its tokens to
        `self.tokens`."""
        raise NotImplementedError

    def evaluate(self) -> dict:
        """Numbers on held-out data (called in eval mode, without gradients)."""
        return {}

    def vocabulary(self):
        """What a checkpoint keeps beside the weights: an object with `save(directory)`."""
        raise NotImplementedError

    def memory_estimate(self) -> memory.MemoryEstimate | None:
        """What the run will hold (tfmr.memory), worked out before the model exists; None skips
        the check (the default: a task whose batches the estimate does not describe)."""
        return None

    def check_memory(self) -> None:
        """Log the memory estimate and refuse a run that cannot fit (train.max_memory, free memory)."""
        estimate = self.memory_estimate()
        if estimate is not None:
            self.log(estimate.summary())
            memory.check(estimate, self.device, self.cfg.train.max_memory)

    def log_fields(self) -> dict:
        """Extra numbers for each log record (the epoch, for example)."""
        return {}

    def extra_state(self) -> dict:
        """Tensors a resumed run needs beyond weights, optimizer, RNG and sampler (by default the
        training objective's, such as a running reward baseline); saved beside the RNG state."""
        return {} if self.objective is None else self.objective.state()

    def load_extra_state(self, tensors: dict) -> None:
        """Restore what `extra_state` saved (`tensors` holds every saved state tensor)."""
        if self.objective is not None:
            self.objective.load_state(tensors)

    # ------------------------------------------------------------------ objective
    def setup_objective(self, model: torch.nn.Module, task: Task) -> None:
        """`train.objective` for this task, checked against the model at start
        (objectives.build_objective); a task calls it from `build_model`."""
        self.objective = build_objective(self.cfg.train.objective, model, task)

    def objective_loss(self, batch: dict) -> Output:
        """One micro-batch through `train.objective` (its `.loss` is what `batch_loss` returns),
        computed through `self.forward`, compiled or not."""
        return self.objective.loss(self.forward, self.model, batch, self.step)

    # ------------------------------------------------------------------ state
    def warm_start(self, path: str) -> str:
        """Fill the fresh model from the trained model at `path` (train.init, tfmr/warmstart.py),
        once its vocabulary is checked to be this run's; return the line the log shows."""
        from .loading import load
        from .warmstart import copy_weights

        try:
            loaded = load(path)
        except (OSError, CheckpointError, ConfigError) as e:
            raise ConfigError(f"train.init {path}: {e}") from None
        if not same_vocabulary(self.vocabulary(), loaded.vocab):
            raise ConfigError(
                f"train.init {path}: its vocabulary differs from this run's data; start from a "
                "model trained on the same data (and settings, e.g. data.stress)"
            )
        return copy_weights(self.model, loaded.model.to(self.device), path)

    def adopt_saved_config(self) -> None:
        saved = from_dict(type(self.cfg), checkpoint.read_config(self.ckpt_dir))
        for name in self.resume_keeps:
            if hasattr(saved, name):
                setattr(self.cfg, name, getattr(saved, name))

    def saved_weights(self):
        """What a checkpoint stores of the model (anything with `state_dict()`): all of it here; a
        fine-tuning run stores only the weights that train."""
        return self.model

    def load_weights(self) -> None:
        """Read back what `saved_weights` stored into `self.model` (resuming)."""
        checkpoint.load_weights(self.ckpt_dir, self.model)

    def seed_rank(self) -> None:
        """Ranks other than 0 get their own torch RNG stream (their own dropout masks)."""
        if self.parallel.rank:
            torch.manual_seed(self.cfg.train.seed + 1_000_003 * self.parallel.rank + self.step)

    def load_state(self) -> None:
        """Weights, optimizer, step, RNG and sampler from the checkpoint: a plain one (saved by one
        process or ddp), or a sharded one (fsdp) saved by any number of ranks."""
        if parallel.is_sharded(self.ckpt_dir):
            parallel.load_sharded(self.ckpt_dir, self.model, self.optimizer)
            tensors, plain = checkpoint.load_state(self.ckpt_dir)
        elif self.parallel.shards_checkpoints:
            raise ConfigError(
                f"{self.ckpt_dir} is a plain checkpoint; resume it with train.parallel=ddp or none "
                "(train.parallel=fsdp resumes sharded checkpoints)"
            )
        else:
            self.load_weights()
            tensors, plain = checkpoint.load_state(self.ckpt_dir)
            self.optimizer.load_state_dict(plain["optimizer"])
        self.step, self.seconds = plain["step"], plain.get("seconds", 0.0)
        self.history = plain.get("history", [])
        self.best = plain.get("best")
        torch.set_rng_state(tensors["rng.torch"])  # rank 0's stream
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.seed_rank()
        self.batches.load_state(tensors["rng.data"])
        self.load_extra_state(tensors)
        self.log(
            f"resumed from {self.ckpt_dir} at step {self.step} ({self.seconds / 60:.1f} min trained)"
        )

    def save(self) -> Path:
        tensors = {
            "rng.torch": torch.get_rng_state(),
            "rng.data": self.batches.state(),
            **self.extra_state(),
        }
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        extra = {
            "step": self.step,
            "seconds": self.seconds,
            "history": self.history,
            "best": self.best,
        }
        if self.parallel.shards_checkpoints:  # fsdp: every rank writes its shard
            return parallel.save_sharded(
                self.parallel,
                self.ckpt_dir,
                self.model,
                self.optimizer,
                to_dict(self.cfg),
                self.vocabulary(),
                tensors,
                extra,
            )
        if self.parallel.is_main:
            path = checkpoint.save(
                self.ckpt_dir,
                self.saved_weights(),
                to_dict(self.cfg),
                self.vocabulary(),
                self.optimizer,
                tensors,
                extra,
            )
            if self.cfg.train.keep_last > 0:
                checkpoint.keep_snapshot(
                    path, self.out / "snapshots", self.step, self.cfg.train.keep_last
                )
        self.parallel.barrier()
        return self.ckpt_dir

    # ------------------------------------------------------------------ schedule
    def progress_fraction(self) -> float:
        """How far the schedule is: by steps, or by the wall-clock budget if that is further."""
        return schedule.progress(self.step, self.seconds, self.cfg.train)

    def schedule_step(self) -> int:
        """The step the learning-rate schedule is at (under a time budget, the budget's share)."""
        return schedule.schedule_step(self.step, self.seconds, self.cfg.train)

    def finished(self) -> bool:
        return schedule.finished(self.step, self.seconds, self.cfg.train)

    # ------------------------------------------------------------------ loop
    def train_step(self) -> float:
        """One optimizer step (with gradient accumulation); returns the mean loss. Interrupted
        before the update, the step is rolled back (RNG and sampler), so a save is exact. A
        non-finite loss or gradient norm is never applied (`train.on_nonfinite`)."""
        t = self.cfg.train
        self.lr = schedule.lr_at(self.schedule_step(), t)
        marks = (
            torch.get_rng_state(),
            self.batches.state(),
            torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        )
        try:
            loss, norm = accumulate_gradients(
                self.model, self.batch_loss, t, self.device, self.parallel
            )
        except KeyboardInterrupt:
            torch.set_rng_state(marks[0])
            self.batches.load_state(marks[1])
            if marks[2] is not None:
                torch.cuda.set_rng_state(marks[2], self.device)
            self.optimizer.zero_grad(set_to_none=True)
            raise
        if math.isfinite(loss) and math.isfinite(norm):
            self.torn = (
                True  # between here and the step count, an interrupt would leave half an update
            )
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            self.optimizer.step()
            self.skipped_in_a_row = 0
        else:
            self.nonfinite(loss, norm)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.torn = False
        return loss

    def nonfinite(self, loss: float, norm: float) -> None:
        """A step whose loss or gradient norm is not finite: stop (nothing is saved), or skip it."""
        what = f"step {self.step + 1}: loss {loss}, gradient norm {norm}"
        if self.cfg.train.on_nonfinite == "skip":
            self.skipped_in_a_row += 1
            if self.skipped_in_a_row < 20:
                self.log(f"{what}: not finite, step skipped (weights unchanged)")
                return
            what += " (20 steps in a row skipped)"
        last = (
            f"the last good checkpoint is {self.ckpt_dir}"
            if self.ckpt_dir.is_dir()
            else "no checkpoint was saved"
        )
        self.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteError(
            f"{what}: not finite; training stopped, nothing non-finite saved ({last}). "
            "Lower train.lr, or set train.on_nonfinite=skip"
        )

    @torch.no_grad()
    def run_evaluation(self) -> dict:
        was_training = self.model.training
        self.model.eval()
        try:
            return self.evaluate()
        finally:
            self.model.train(was_training)

    def fit(self) -> dict:
        """Train to `train.steps` (or the time budget). Ctrl-C stops after the current step and
        saves a checkpoint, so `--resume` continues exactly."""
        t = self.cfg.train
        if self.finished():
            self.log(
                f"the run in {self.out} is finished (step {self.step} of {t.steps}); "
                "raise train.steps or train.max_minutes to train on"
            )
            release_run_folder(self.out)
            self.parallel.close()
            return self.history[-1] if self.history else {}
        metrics = self._open_metrics() if self.parallel.is_main else open(os.devnull, "w")
        bar = tqdm(
            total=t.steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        self.window = (0.0, 0)  # (seconds, tokens) trained since the last log line
        try:
            with _CtrlC() as ctrl_c:
                if t.keep_best and self.best is None:
                    self._evaluate_start(metrics)
                self.model.train()
                while not self.finished():
                    metrics.write(finite_json(self._step_and_record(bar)) + "\n")
                    bar.update(1)
                    if ctrl_c.requested:
                        raise KeyboardInterrupt
                    if self.step % t.checkpoint_every == 0 or self.finished():
                        metrics.flush()
                        self.save()
        except KeyboardInterrupt:
            bar.close()
            metrics.flush()
            if self.torn:
                self.log(
                    f"\ninterrupted inside an update: not saved; {self.ckpt_dir} keeps the last checkpoint"
                )
            else:
                self.save()
                self.log(
                    f"\ninterrupted at step {self.step}; checkpoint saved; continue with --resume"
                )
            raise
        finally:
            bar.close()
            metrics.close()
            release_run_folder(self.out)
            self.parallel.close()
        if self.parallel.is_main:
            plot_losses(self.history, self.out / "loss.png")
        return self.history[-1]

    def _step_and_record(self, bar) -> dict:
        """One training step, then its metrics record (log fields, evaluation when due)."""
        t = self.cfg.train
        t0 = time.perf_counter()
        loss = self.train_step()
        spent = time.perf_counter() - t0
        self.seconds += spent
        self.window = (self.window[0] + spent, self.window[1] + self.tokens * self.parallel.world)
        self.tokens = 0
        record = {
            "step": self.step,
            "loss": loss,
            "lr": self.lr,
            "seconds": round(self.seconds, 2),
            **self.log_fields(),
        }
        if not math.isfinite(loss):
            record["skipped"] = True
        done = self.finished()
        if self.step % t.log_every == 0 or done:
            record["tokens_per_s"] = self.window[1] / max(self.window[0], 1e-9)
            self.window = (0.0, 0)
            record.update(expert_stats(self.model))  # MoE expert utilisation; {} without MoE
            self._show(bar, record, done)
        if self.step % t.eval_every == 0 or done:
            evaluation = self.run_evaluation()
            record.update(evaluation)
            if self.parallel.is_main:
                shown = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in evaluation.items())
                bar.write(f"step {self.step}: {shown}")
            self.keep_if_best(evaluation)
        self.history.append(record)
        return record

    def _evaluate_start(self, metrics) -> None:
        """train.keep_best: the weights before step 1 are the first candidate (a fine-tuning run may
        not improve on them); a fresh run's metrics start with their evaluation, as step 0."""
        evaluation = self.run_evaluation()
        if self.step == 0:
            record = {"step": 0, **evaluation}
            metrics.write(finite_json(record) + "\n")
            self.history.append(record)
        self.keep_if_best(evaluation)

    def keep_if_best(self, evaluation: dict) -> None:
        """train.keep_best: write the weights to RUN/best/ when the metric is the lowest so far."""
        name = self.cfg.train.keep_best
        if not name:
            return
        if name not in evaluation:
            raise ConfigError(
                f"train.keep_best={name}: this run's evaluation has no such number; "
                f"it has: {', '.join(evaluation) or 'none'}"
            )
        value = float(evaluation[name])
        if not math.isfinite(value) or (self.best is not None and not value < self.best["value"]):
            return
        self.best = {"step": self.step, "value": value}
        if self.parallel.is_main:
            checkpoint.save(self.out / "best", self.model, to_dict(self.cfg), self.vocabulary())
        self.parallel.barrier()

    def _open_metrics(self):
        """metrics.jsonl for appending: a fresh run starts it anew; a resumed run first drops the
        lines past its checkpoint's step (written after the last save), so no step repeats."""
        path = self.out / "metrics.jsonl"
        if not self.step or not path.exists():
            return open(path, "w")
        kept = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
        path.write_text("".join(line + "\n" for line in kept))
        return open(path, "a")

    def _show(self, bar, record: dict, done: bool) -> None:
        t = self.cfg.train
        if t.max_minutes > 0:  # the bar's end: the steps the time budget will allow
            bar.total = (
                self.step
                if done
                else min(t.steps, round(self.step / max(self.progress_fraction(), 1e-9)))
            )
        bar.set_postfix(
            loss=f"{record['loss']:.3f}",
            tok_s=f"{record['tokens_per_s']:,.0f}",
            min=f"{self.seconds / 60:.1f}",
        )


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0."""
