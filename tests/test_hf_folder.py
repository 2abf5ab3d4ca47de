"""Outside reference: Hugging Face folders written by `save_pretrained` (a random tiny model of
each mapped family plus a byte-level BPE trained here with the `tokenizers` library) are read by
tfmr without transformers, and give transformers' logits and greedy text; broken folders are
one-line errors with exit code 2."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tfmr.cli import main  # noqa: E402
from tfmr.interop import from_pretrained, is_hf_folder  # noqa: E402
from tfmr.tokenizers import BPE, load  # noqa: E402
from tfmr.tokenizers.hf import HFTokenizer  # noqa: E402

TEXT = (
    "The quick brown fox jumps over the lazy dog. Café crème, naïve façade; 東京 and 北京 are cities. "
    "Emoji 🙂🙃 too! "
) * 20
PROMPT = "The café in 東京"
DECODERS = ("gpt2", "bloom", "llama", "mistral", "mixtral")


def train_hf_tokenizer(vocab_size=300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT], trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", clean_up_tokenization_spaces=False
    )


def hf_model(family: str, vocab: int):
    torch.manual_seed(0)
    t = transformers
    common = {
        "vocab_size": vocab,
        "initializer_range": 0.3,
    }  # large weights: greedy choices are not near ties
    llama = dict(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        **common,
    )
    build = {
        "gpt2": lambda: t.GPT2LMHeadModel(
            t.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4, **common)
        ),
        "bloom": lambda: t.BloomForCausalLM(
            t.BloomConfig(hidden_size=32, n_layer=2, n_head=4, **common)
        ),
        "llama": lambda: t.LlamaForCausalLM(t.LlamaConfig(**llama)),
        "mistral": lambda: t.MistralForCausalLM(t.MistralConfig(sliding_window=8, **llama)),
        "mixtral": lambda: t.MixtralForCausalLM(
            t.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **llama)
        ),
        "bert": lambda: t.BertForMaskedLM(
            t.BertConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=48,
                max_position_embeddings=64,
                **common,
            )
        ),
        "marian": lambda: t.MarianMTModel(
            t.MarianConfig(
                d_model=32,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=48,
                decoder_ffn_dim=48,
                max_position_embeddings=64,
                pad_token_id=0,
                decoder_start_token_id=0,
                init_std=0.3,
                vocab_size=vocab,
            )
        ),
    }
    model = build[family]().eval()
    with torch.no_grad():  # random norm affine and biases: a mapping mistake there cannot hide
        for name, p in model.named_parameters():
            if "norm" in name.lower() or "ln" in name or name.endswith("bias"):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def hf_tokenizer():
    return train_hf_tokenizer()


@pytest.fixture(scope="module")
def folders(tmp_path_factory, hf_tokenizer):
    """family -> (folder, transformers model), each saved with save_pretrained (safetensors)."""
    out = {}
    for family in (*DECODERS, "bert", "marian"):
        model = hf_model(family, len(hf_tokenizer))
        path = tmp_path_factory.mktemp(family)
        model.save_pretrained(path)
        hf_tokenizer.save_pretrained(path)
        out[family] = (path, model)
    return out


def _logits(model, family, ids):
    with torch.no_grad():
        if family == "marian":
            return model(ids, ids[:, :7]).logits
        return model(ids).logits


@pytest.mark.parametrize("family", [*DECODERS, "bert", "marian"])
def test_folder_logits_match_transformers(folders, family):
    path, hf = folders[family]
    assert is_hf_folder(path)
    loaded = from_pretrained(path)
    assert loaded.model_type == family
    ids = torch.randint(
        0, hf.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        ref = hf(ids, decoder_input_ids=ids[:, :7]).logits if family == "marian" else hf(ids).logits
    torch.testing.assert_close(_logits(loaded.model, family, ids), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", DECODERS)
def test_generate_prints_transformers_greedy_text(folders, hf_tokenizer, family, capsys):
    path, hf = folders[family]
    ids = hf_tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = PROMPT + hf_tokenizer.decode(out[0, ids.shape[1] :])
    assert (
        main(
            [
                "lm",
                "generate",
                "--checkpoint",
                str(path),
                "--prompt",
                PROMPT,
                "--temperature",
                "0",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out == expected + "\n"
    assert f"loaded Hugging Face folder {path} (model_type {family})" in captured.err


def test_byte_level_tokenizer_becomes_tfmr_bpe_with_the_same_ids(folders, hf_tokenizer):
    tok = load(folders["gpt2"][0])
    assert isinstance(tok, BPE)  # exact mapping: tfmr's own encoder, no tokenizers library needed
    probe = TEXT[:200] + " unseen wörds ✓ 🙂 <|endoftext|>"
    assert tok.encode(probe, allowed_special="all") == hf_tokenizer(probe).input_ids
    assert tok.decode(hf_tokenizer(probe).input_ids) == probe


def test_other_tokenizers_go_through_the_tokenizers_library(tmp_path, hf_tokenizer):
    from tokenizers import normalizers

    backend = hf_tokenizer.backend_tokenizer
    backend.normalizer = normalizers.Lowercase()  # not byte-level BPE as tfmr's BPE does it
    (tmp_path / "tokenizer.json").write_text(backend.to_str())
    tok = load(tmp_path)
    assert isinstance(tok, HFTokenizer)
    assert tok.encode("The CAFÉ") == backend.encode("The CAFÉ").ids
    assert tok.encode("The CAFÉ") == backend.encode("the café").ids
    backend.normalizer = None


def test_sharded_safetensors_load(tmp_path, hf_tokenizer):
    hf = hf_model("llama", len(hf_tokenizer))
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    ids = torch.randint(0, len(hf_tokenizer), (1, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(
            from_pretrained(tmp_path).model(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-4
        )


def test_convert_writes_a_checkpoint_that_generates_the_same_text(folders, tmp_path, capsys):
    path = folders["llama"][0]
    args = ["--prompt", PROMPT, "--temperature", "0", "--max-new-tokens", "8"]
    assert main(["lm", "generate", "--checkpoint", str(path), *args]) == 0
    direct = capsys.readouterr().out
    assert (
        main(
            [
                "checkpoint",
                "import",
                "hf",
                "--checkpoint",
                str(path),
                "--out",
                str(tmp_path / "ckpt"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["lm", "generate", "--checkpoint", str(tmp_path / "ckpt"), *args]) == 0
    captured = capsys.readouterr()
    assert (
        captured.out == direct and "Hugging Face" not in captured.err
    )  # a tfmr checkpoint this time


def test_gpt2_loads_without_copies_and_saves_and_trains_as_any_model(folders, tmp_path):
    """GPT-2's fused, transposed c_attn becomes q, k and v as views of the read tensor (no copy:
    loading is as fast as reading the file's map); a checkpoint of it packs them, and a training
    step updates them apart."""
    from tfmr import checkpoint
    from tfmr.builder import build_model

    path, hf = folders["gpt2"]
    model = from_pretrained(path).model
    attn = model.blocks[0].attn
    assert (
        attn.q_proj.weight.untyped_storage().data_ptr()
        == attn.k_proj.weight.untyped_storage().data_ptr()
    )
    assert model.lm_head.weight is model.tok_emb.weight  # tied again after the load
    ids = torch.randint(
        0, hf.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2)
    )
    checkpoint.save(tmp_path / "ckpt", model, {})
    fresh = build_model(model.cfg)
    checkpoint.load_weights(tmp_path / "ckpt", fresh)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(ids).logits, model(ids).logits, atol=0, rtol=0)
    k_before = attn.k_proj.weight.detach().clone()
    attn.k_proj.weight.requires_grad_(False)
    optimizer = torch.optim.SGD([attn.q_proj.weight], lr=1.0)
    model.train()(ids, targets=ids).loss.backward()
    optimizer.step()
    assert torch.equal(
        attn.k_proj.weight, k_before
    )  # q's update stays inside q's columns of c_attn
    assert not torch.equal(attn.q_proj.weight, fresh.blocks[0].attn.q_proj.weight)


# ----------------------------------------------------------------------------- bad folders


def _broken(folders, tmp_path, family="gpt2"):
    path = tmp_path / "broken"
    shutil.copytree(folders[family][0], path)
    return path


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def _refused(capsys, path, message, *flags):
    code = main(
        [
            "lm",
            "generate",
            "--checkpoint",
            str(path),
            "--prompt",
            "a",
            "--max-new-tokens",
            "2",
            *flags,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert (
        err.startswith("tfmr: error:") and len(err.strip().splitlines()) == 1 and message in err
    ), err


@pytest.mark.parametrize(
    "dropped,missing",
    [
        ("final_norm.bias", "['final_norm.bias']"),
        ("tok_emb.weight", "['lm_head.weight', 'tok_emb.weight']"),
    ],
)
def test_a_mapping_that_leaves_a_weight_unloaded_is_refused(
    folders, tmp_path, capsys, monkeypatch, dropped, missing
):
    """A weight the family's mapping does not fill is refused; the tied output matrix is filled
    through its tie only when the matrix it is tied to was loaded."""
    from tfmr.interop import gpt2

    mapped = gpt2.state_dict_from_hf
    monkeypatch.setattr(
        gpt2,
        "state_dict_from_hf",
        lambda sd, cfg: {k: v for k, v in mapped(sd, cfg).items() if k != dropped},
    )
    _refused(
        capsys,
        folders["gpt2"][0],
        f"weight mapping for gpt2 is incomplete: missing {missing}, unexpected []",
    )


def test_folder_without_config_json_is_refused(folders, tmp_path, capsys):
    path = _broken(folders, tmp_path)
    (path / "config.json").unlink()
    _refused(capsys, path, "")  # neither a tfmr checkpoint nor an HF folder
    assert (
        main(
            ["checkpoint", "import", "hf", "--checkpoint", str(path), "--out", str(tmp_path / "x")]
        )
        == 2
    )
    assert "no config.json" in capsys.readouterr().err


def test_unmapped_model_type_is_refused(folders, tmp_path, capsys):
    path = _broken(folders, tmp_path)
    _edit_config(path, model_type="rwkv")
    _refused(capsys, path, "no tfmr mapping for Hugging Face model_type 'rwkv'")


def test_shape_mismatch_is_refused(folders, tmp_path, capsys):
    path = _broken(folders, tmp_path)
    _edit_config(path, n_embd=48)
    _refused(capsys, path, "weights do not match config.json")


def test_truncated_shard_is_refused(folders, tmp_path, capsys):
    path = _broken(folders, tmp_path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _refused(capsys, path, "not a complete safetensors file")


def test_pickle_only_folder_needs_allow_pickle(folders, tmp_path, capsys):
    path = _broken(folders, tmp_path)
    hf = folders["gpt2"][1]
    (path / "model.safetensors").unlink()
    torch.save(hf.state_dict(), path / "pytorch_model.bin")
    _refused(capsys, path, "pass --allow-pickle")
    assert (
        main(
            [
                "lm",
                "generate",
                "--checkpoint",
                str(path),
                "--prompt",
                "a",
                "--max-new-tokens",
                "2",
                "--temperature",
                "0",
                "--allow-pickle",
            ]
        )
        == 0
    )
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(
            from_pretrained(path, allow_pickle=True).model(ids).logits,
            hf(ids).logits,
            atol=1e-4,
            rtol=1e-4,
        )
