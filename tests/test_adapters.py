"""LoRA and bottleneck adapters as transforms of a built model: B = 0 changes nothing, merged
equals unmerged, only the added weights get gradients, they save and load apart from the base,
and `tfmr lm finetune` -> `tfmr lm generate --lora` works from a trained checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tfmr import Choice, ModelConfig, build_model
from tfmr.adapters import (
    AdaptedLinear,
    LoRALinear,
    apply_adapters,
    apply_lora,
    load_adaptation,
    merge_lora,
    parse_spec,
    save_adaptation,
    unmerge_lora,
)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    base = dict(vocab_size=40, dim=32, layers=2, heads=4, context=16)
    base.update(kw)
    return build_model(ModelConfig(**base)).eval()


def _ids():
    return torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(5))


def _randomise(model, pattern):
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if pattern in name:
                p.normal_(0, 0.3)


def test_lora_with_b_zero_leaves_logits_unchanged():
    model = _model()
    before = model(_ids()).logits
    apply_lora(model, targets=("q_proj", "v_proj", "w1"), rank=4, alpha=8)
    assert len([m for m in model.modules() if isinstance(m, LoRALinear)]) == 6  # 3 per layer
    assert all(
        torch.all(m.lora_B == 0) and m.lora_A.abs().sum() > 0
        for m in model.modules()
        if isinstance(m, LoRALinear)
    )
    torch.testing.assert_close(model(_ids()).logits, before, atol=0, rtol=0)


def test_lora_layer_equals_its_formula():
    torch.manual_seed(0)
    base = torch.nn.Linear(8, 6)
    layer = LoRALinear(base, rank=2, alpha=6)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 8)
    expected = x @ base.weight.T + base.bias + 3.0 * (x @ layer.lora_A.T @ layer.lora_B.T)
    torch.testing.assert_close(layer(x), expected)


def test_merged_equals_unmerged_and_unmerge_restores_the_base():
    model = _model()
    base_weights = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(
        model, targets=("q_proj", "k_proj", "v_proj", "out_proj", "w1", "w2"), rank=4, alpha=16
    )
    _randomise(model, "lora_B")
    unmerged = model(_ids()).logits
    merge_lora(model)
    assert all(m.merged for m in model.modules() if isinstance(m, LoRALinear))
    torch.testing.assert_close(model(_ids()).logits, unmerged, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(
        model.blocks[0].attn.q_proj.weight, base_weights["blocks.0.attn.q_proj.weight"]
    )
    unmerge_lora(model)
    torch.testing.assert_close(model(_ids()).logits, unmerged, atol=1e-5, rtol=1e-5)
    for name, value in base_weights.items():
        torch.testing.assert_close(model.state_dict()[name], value, atol=1e-6, rtol=0)


def test_only_lora_parameters_get_gradients():
    model = _model().train()
    apply_lora(model, targets=("q_proj", "v_proj"), rank=2, alpha=4, dropout=0.1)
    _randomise(model, "lora_B")
    ids = _ids()
    model(ids, ids).loss.backward()
    for name, p in model.named_parameters():
        if ".lora_" in name:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    # base names are kept: a base state dict still loads, LoRA only adds keys
    keys = set(model.state_dict())
    assert set(_model().state_dict()) <= keys
    assert keys - set(_model().state_dict()) == {
        f"blocks.{i}.attn.{p}.lora_{ab}"
        for i in range(2)
        for p in ("q_proj", "v_proj")
        for ab in "AB"
    }


def test_lora_weights_save_and_load_apart_from_the_base(tmp_path):
    model = _model()
    apply_lora(model, targets=("q_proj", "v_proj"), rank=4, alpha=8)
    _randomise(model, "lora_")
    tuned = model(_ids()).logits
    path = save_adaptation(model, tmp_path / "lora.safetensors", {"note": "test"})
    saved = load_file(str(path))
    assert set(saved) == {
        n for n, _ in model.named_parameters() if ".lora_" in n
    }  # no base weights
    fresh = _model()  # same base weights, no LoRA yet: settings come from the file's metadata
    assert not torch.allclose(fresh(_ids()).logits, tuned)
    load_adaptation(fresh, path)
    torch.testing.assert_close(fresh(_ids()).logits, tuned)
    merged = load_adaptation(_model(), path, merge=True)
    torch.testing.assert_close(merged(_ids()).logits, tuned, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="does not fit this model"):
        load_adaptation(_model(layers=3), path)


def test_bad_targets_are_refused_by_name():
    with pytest.raises(
        ValueError, match="no linear layer named qkv in this model; linear layers here: .*q_proj"
    ):
        apply_lora(_model(), targets=("qkv",))
    with pytest.raises(ValueError, match="tied embeddings"):
        apply_lora(_model(), targets=("lm_head",))
    untied = apply_lora(_model(tie_embeddings=False), targets=("lm_head",), rank=2)
    assert isinstance(untied.lm_head, LoRALinear)


def test_lora_reaches_every_expert_of_a_mixture():
    model = _model(ffn=Choice("moe", experts=3, top_k=2))
    before = model(_ids()).logits
    apply_lora(model, targets=("w1",), rank=2)
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 2 * 3
    torch.testing.assert_close(model(_ids()).logits, before, atol=0, rtol=0)


def test_adapters_start_as_identity_and_train_alone_with_the_norms(tmp_path):
    model = _model().train()
    before = model(_ids()).logits
    apply_adapters(model, targets=("out_proj", "w2"), bottleneck=8)
    assert sum(isinstance(m, AdaptedLinear) for m in model.modules()) == 4
    torch.testing.assert_close(model(_ids()).logits, before, atol=0, rtol=0)
    ids = _ids()
    model(ids, ids).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".adapter." in n or "norm" in n for n in trainable)
    assert (
        "blocks.0.attn.out_proj.adapter.up.weight" in trainable
        and "blocks.1.ffn_norm.weight" in trainable
    )
    assert "blocks.0.attn.q_proj.weight" not in trainable and "tok_emb.weight" not in trainable
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    _randomise(model, ".adapter.")
    tuned = model(_ids()).logits
    # the adapter after out_proj is h + up(act(down(h)))
    layer = model.blocks[0].attn.out_proj
    h = torch.randn(3, 32)
    a = layer.adapter
    y = h @ layer.weight.T + layer.bias
    torch.testing.assert_close(layer(h), y + a.up(torch.nn.functional.gelu(a.down(y))))
    path = save_adaptation(model, tmp_path / "adapter.safetensors")
    torch.testing.assert_close(load_adaptation(_model().train(), path)(_ids()).logits, tuned)


def test_parse_spec_reads_the_command_line_form():
    assert parse_spec("rank=8,alpha=16,targets=q_proj,v_proj") == {
        "rank": 8,
        "alpha": 16,
        "targets": ["q_proj", "v_proj"],
    }
    assert parse_spec("targets=w1, dropout=0.05") == {"targets": ["w1"], "dropout": 0.05}
    with pytest.raises(ValueError, match="key=value"):
        parse_spec("rank=8,oops")


def test_finetune_trains_only_lora_from_a_checkpoint(tiny_cfg, tmp_path):
    from tfmr.checkpoint import load_weights
    from tfmr.tasks.finetune import FinetuneTrainer, finetune_config
    from tfmr.train import Trainer

    tiny_cfg.train.steps = 4
    Trainer(tiny_cfg, tmp_path / "base", progress=False, log=lambda *a: None).fit()
    ckpt = tmp_path / "base" / "checkpoint"
    cfg = finetune_config(ckpt, tiny_cfg.data.path, ["train.steps=6", "train.lr=0.01"])
    lora = {"rank": 2, "alpha": 4, "targets": ["q_proj", "v_proj"]}
    trainer = FinetuneTrainer(
        cfg, tmp_path / "ft", ckpt, "lora", lora, progress=False, log=lambda *a: None
    )
    trainer.fit()
    base = build_model(cfg.model)
    load_weights(ckpt, base)
    tuned = trainer.model.state_dict()
    for name, value in base.state_dict().items():
        assert torch.equal(tuned[name], value), name  # the base never moved
    assert any(tuned[n].abs().sum() > 0 for n in tuned if n.endswith("lora_B"))  # LoRA did
    assert set(load_file(str(tmp_path / "ft" / "adaptation.safetensors"))) == {
        n for n in tuned if ".lora_" in n
    }


def _tfmr(*args):
    r = subprocess.run(
        [sys.executable, "-m", "tfmr", *args], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_cli_finetune_then_generate_with_lora(tiny_cfg, text_file, tmp_path):
    from tfmr.adapters import load_adaptation as load
    from tfmr.cli import load_model
    from tfmr.decode import greedy
    from tfmr.train import Trainer

    base = tmp_path / "base"
    tiny_cfg.train.steps = 3
    Trainer(
        tiny_cfg, base, progress=False, log=lambda *a: None
    ).fit()  # what `tfmr lm train` writes
    out = _tfmr(
        "lm",
        "finetune",
        "--checkpoint",
        str(base / "checkpoint"),
        "--lora",
        "rank=4,alpha=32,targets=q_proj,v_proj,w1",
        "--data",
        str(text_file),
        "--out",
        str(tmp_path / "ft"),
        "--no-progress",
        "--set",
        "train.steps=8",
        "--set",
        "train.lr=0.02",
    )
    assert "lora weights:" in out
    text = _tfmr(
        "lm",
        "generate",
        "--checkpoint",
        str(base / "checkpoint"),
        "--lora",
        str(tmp_path / "ft"),
        "--prompt",
        "To be",
        "--max-new-tokens",
        "20",
        "--temperature",
        "0",
    )
    model, tok, _ = load_model(base / "checkpoint")
    load(model, tmp_path / "ft" / "adaptation.safetensors")
    ids = greedy(model, torch.tensor([tok.encode("To be")]), 20)
    assert text.rstrip("\n") == tok.decode(ids[0].tolist())  # the CLI used base + LoRA


def test_finetune_names_the_valid_settings(tmp_path):
    from tfmr import ConfigError
    from tfmr.tasks.finetune import FinetuneTrainer, spec_options

    with pytest.raises(
        ConfigError, match="--lora has no setting 'ranks'; valid: targets, rank, alpha, dropout"
    ):
        FinetuneTrainer(None, tmp_path, tmp_path, "lora", spec_options("ranks=4"))
    with pytest.raises(ConfigError, match="valid: lora, adapter"):
        FinetuneTrainer(None, tmp_path, tmp_path, "prefix", {})
