"""Fine-tuning a trained checkpoint with LoRA or bottleneck adapters (`tfmr lm finetune`, whose
argument parsing is tfmr/cli/finetune.py).

    tfmr lm finetune --checkpoint RUN/checkpoint --lora rank=8,alpha=16,targets=q_proj,v_proj \
                  --data new.txt --out RUN-lora [--set train.steps=300 ...]
    tfmr lm generate --checkpoint RUN/checkpoint --lora RUN-lora --prompt "..."

The base checkpoint's model, tokenizer and training settings are the starting point (`--set`
overrides any of them, e.g. train.steps or train.lr); the new text is encoded with the base
tokenizer. The base may also be a decoder-only Hugging Face folder (`tfmr.interop`): its model and
tokenizer.json, with the `default` preset's training settings; its digest is one sha256 over its
weight files (`interop.hf_folder.weights_digest`). Only the LoRA / adapter weights train, and only they are written
(`OUT/adaptation.safetensors`, with the settings and the base weights' sha256 as metadata), next
to the usual metrics.jsonl and loss.png. Resuming a fine-tuning run is not supported.
"""

from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path

from .. import checkpoint, memory
from ..adapters import (
    ADAPTATION_FILE,
    apply_adapters,
    apply_lora,
    load_adaptation,
    parse_spec,
    read_adaptation,
    save_adaptation,
    trainable_state_dict,
)
from ..config import ConfigError, RunConfig, apply_override, coerce
from ..data import default_cache_root, prepare
from ..devices import precision
from ..interop import from_pretrained, is_hf_folder
from ..interop.hf_folder import weights_digest
from ..presets import resolve
from ..programs import shortened
from ..tokenizers import load as load_tokenizer
from ..train import Trainer

METHODS = {"lora": apply_lora, "adapter": apply_adapters}


def base_digest(directory: Path) -> str:
    """The sha256 of a checkpoint's weights, as its manifest records it (of a Hugging Face
    folder's weight files: weights_digest)."""
    if is_hf_folder(directory):
        return weights_digest(directory)
    return json.loads((Path(directory) / checkpoint.MANIFEST).read_text())["model.safetensors"]


def base_folder(directory) -> Path:
    """The base: a Hugging Face folder as it is, a tfmr checkpoint verified against its manifest."""
    return Path(directory) if is_hf_folder(directory) else checkpoint.verify(directory)


def load_base_weights(directory: Path, model) -> None:
    """The base weights into `model` (built from the base's config)."""
    if not is_hf_folder(directory):
        checkpoint.load_weights(directory, model)
        return
    base = from_pretrained(directory).model
    if base.cfg.arch != "decoder":
        raise ConfigError(
            f"{directory}: finetune trains language models; this folder's model is {base.cfg.arch}"
        )
    model.load_state_dict(base.state_dict())


class FinetuneTrainer(Trainer):
    """The Trainer, starting from a checkpoint's weights with LoRA or adapters added."""

    writes = "adapter"  # tfmr.folders: the run folder holds adaptation.safetensors
    replaced_files = (ADAPTATION_FILE,)

    def __init__(self, cfg: RunConfig, out_dir, base_dir, method: str, options: dict, **kw):
        if method not in METHODS:
            raise ConfigError(f"unknown fine-tuning method {method!r}; valid: {', '.join(METHODS)}")
        valid = [n for n in inspect.signature(METHODS[method]).parameters if n != "model"]
        hints = typing.get_type_hints(METHODS[method])
        options = dict(options)
        for key, value in options.items():
            if key not in valid:
                raise ConfigError(f"--{method} has no setting {key!r}; valid: {', '.join(valid)}")
            if key in hints:  # rank=abc: one line naming the setting and its type
                options[key] = coerce(value, hints[key], f"--{method} {key}")
        self.base_dir, self.method, self.options = base_folder(base_dir), method, options
        if kw.get("resume"):
            self.check_resumed(Path(out_dir))
        super().__init__(cfg, out_dir, **kw)

    def check_resumed(self, out: Path) -> None:
        """--resume continues the same fine-tuning: the same base weights, method and settings."""
        path = out / ADAPTATION_FILE
        if not path.is_file():
            raise ConfigError(f"nothing to resume: {out} holds no {ADAPTATION_FILE}")
        try:
            settings, _, extra = read_adaptation(path)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if extra.get("base_sha256") != base_digest(self.base_dir):
            raise ConfigError(
                f"--resume: {out} was fine-tuned from {extra.get('base')}, not {self.base_dir}"
            )
        given = {k: v for k, v in settings.items() if k != "kind"}
        if settings.get("kind") != self.method or any(
            given.get(k) != v for k, v in self.options.items()
        ):
            raise ConfigError(
                f"--resume: {out} was fine-tuned with --{settings.get('kind')} "
                f"{json.dumps(given)}; give the same settings"
            )

    def prepare_data(self):
        tokenizer = load_tokenizer(self.base_dir)
        cache = self.cfg.data.cache_dir or default_cache_root()
        return prepare(self.cfg.data, cache, log=self.log, tokenizer=tokenizer)

    def memory_estimate(self):
        """The base model's estimate plus the LoRA / adapter weights, with optimizer state for them
        only; those weights are counted on the meta device (nothing allocated), so a rank of 1e8
        is refused in a second."""
        t = self.cfg.train
        added = self.adaptation_size()
        est = memory.estimate(
            self.cfg.model,
            t.batch_size,
            self.batches.context,
            precision(self.device, t.dtype),
            trainable=added,
        )
        est.params += added
        est.parameter_bytes += 4 * added
        return est

    def adaptation_size(self) -> int:
        """The number of weights the method adds, from a skeleton of the model on the meta device."""
        import torch

        from ..builder import build_model

        with torch.device("meta"):
            model = build_model(self.cfg.model)
            before = sum(p.numel() for p in model.parameters())
            self.adapt(model)
        return sum(p.numel() for p in model.parameters()) - before

    def adapt(self, model) -> None:
        try:
            METHODS[self.method](model, **self.options)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"--{self.method}: {e}") from None

    def build_model(self):
        model = super().build_model()
        load_base_weights(self.base_dir, model)
        self.adapt(model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.log(
            f"{self.method}: {trainable:,} trainable parameters of {sum(p.numel() for p in model.parameters()):,}"
        )
        return model

    def saved_weights(self):
        return _Trainable(self.model)

    def load_weights(self) -> None:
        from safetensors.torch import load_file

        directory = checkpoint.verify(self.ckpt_dir)
        tensors = load_file(str(directory / "model.safetensors"))
        expected = set(trainable_state_dict(self.model))
        if set(tensors) != expected:
            raise ConfigError(
                f"{directory} does not fit this fine-tuning: missing {sorted(expected - set(tensors))[:4]}"
            )
        self.model.load_state_dict(tensors, strict=False)

    def save(self) -> Path:
        """The checkpoint (the weights that train, optimizer, RNG), then OUT/adaptation.safetensors."""
        super().save()
        extra = {
            "base": str(self.base_dir),
            "base_sha256": base_digest(self.base_dir),
            "step": self.step,
        }
        return save_adaptation(self.model, self.out / ADAPTATION_FILE, extra)


class _Trainable:
    """The weights of a fine-tuning run that train, as a checkpoint stores them (`state_dict()`)."""

    def __init__(self, model):
        self.model = model

    def state_dict(self) -> dict:
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}


def finetune_config(base_dir, data: str | None, sets: list[str]) -> RunConfig:
    """The base run's config (through the one resolver: the config saved in `base_dir`), pointed
    at the new data with the default token cache, then each `--set`. A Hugging Face folder: the
    `default` preset with the folder's model config."""
    if not is_hf_folder(base_dir):
        return shortened(
            resolve(
                None,
                data=data,
                overrides=["data.cache_dir=none", *sets],
                cls=RunConfig,
                saved=base_dir,
            )
        )
    from ..interop.hf_folder import config_namespace, family, read_hf_config

    hf = read_hf_config(base_dir)
    try:
        model_cfg = family(hf["model_type"]).config_from_hf(config_namespace(hf))
    except (ValueError, AttributeError, TypeError) as e:
        raise ConfigError(f"{base_dir}: {e}") from None
    if model_cfg.arch != "decoder":
        raise ConfigError(
            f"{base_dir}: finetune trains language models; this folder's model is {model_cfg.arch} "
            f"({hf['model_type']})"
        )
    cfg = resolve("default", data=data, overrides=["data.cache_dir=none"], cls=RunConfig)
    cfg.model = model_cfg
    for assignment in sets:
        apply_override(cfg, assignment)
    return shortened(cfg)


def add_finetuned(model, adaptation_path, base_dir, merge: bool = True):
    """Add the LoRA / adapter weights of a finetune run to `model`, loaded from `base_dir`;
    refuse weights fine-tuned from another base checkpoint."""
    try:
        _, _, extra = read_adaptation(adaptation_path)
        expected = extra.get("base_sha256")
        if expected and expected != base_digest(
            base_dir if is_hf_folder(base_dir) else checkpoint.resolve(base_dir)
        ):
            raise ValueError(
                f"{adaptation_path} was fine-tuned from other base weights ({extra.get('base')}); "
                f"it does not fit {base_dir}"
            )
        return load_adaptation(model, adaptation_path, merge=merge)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def spec_options(text: str) -> dict:
    try:
        return parse_spec(text)
    except ValueError as e:
        raise ConfigError(str(e)) from None
