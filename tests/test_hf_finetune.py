"""`tfmr lm finetune --checkpoint HF-FOLDER`: LoRA on a random tiny Llama folder written by
transformers' `save_pretrained`, then `tfmr lm generate --lora` with the folder as the base, equal
to the base + LoRA applied by hand; LoRA weights refuse a folder whose weights changed."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tfmr.adapters import load_adaptation  # noqa: E402
from tfmr.cli import main  # noqa: E402
from tfmr.decode import greedy  # noqa: E402
from tfmr.interop import from_pretrained  # noqa: E402

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 40


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT], trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def _llama_folder(path, tok, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.3,
    )
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_finetune_a_hugging_face_folder_then_generate_with_its_lora(tmp_path, capsys):
    tok = _tokenizer()
    base = _llama_folder(tmp_path / "llama", tok)
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    assert (
        main(
            [
                "lm",
                "finetune",
                "--checkpoint",
                str(base),
                "--lora",
                "rank=4,alpha=16,targets=q_proj,v_proj",
                "--data",
                str(tmp_path / "text.txt"),
                "--out",
                str(tmp_path / "ft"),
                "--no-progress",
                "--set",
                "train.steps=4",
                "--set",
                "train.lr=0.05",
                "--set",
                "train.warmup=0",
                "--set",
                "train.batch_size=2",
                "--set",
                "train.eval_iters=1",
                "--set",
                "model.context=32",
            ]
        )
        == 0
    )
    capsys.readouterr()
    args = ["--prompt", "To be", "--temperature", "0", "--max-new-tokens", "12"]
    assert (
        main(["lm", "generate", "--checkpoint", str(base), "--lora", str(tmp_path / "ft"), *args])
        == 0
    )
    tuned_text = capsys.readouterr().out
    model, tokenizer, _ = from_pretrained(base)
    prompt = torch.tensor([tokenizer.encode("To be")])
    with torch.no_grad():
        plain = model(prompt).logits
    load_adaptation(model, tmp_path / "ft" / "adaptation.safetensors")
    tuned = greedy(model, prompt, 12)[0].tolist()
    assert tuned_text == tokenizer.decode(tuned) + "\n"  # the CLI used the folder + its LoRA
    with torch.no_grad():
        assert (model(prompt).logits - plain).abs().max() > 1e-3  # and the LoRA trained

    _llama_folder(base, tok, seed=1)  # the same folder, other weights: the LoRA no longer fits
    capsys.readouterr()
    code = main(
        ["lm", "generate", "--checkpoint", str(base), "--lora", str(tmp_path / "ft"), *args]
    )
    _one_line_error(capsys.readouterr().err, code, "was fine-tuned from other base weights")


def test_finetune_refuses_an_encoder_decoder_folder_in_one_line(tmp_path, capsys):
    tok = _tokenizer()
    cfg = transformers.MarianConfig(
        vocab_size=len(tok),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        pad_token_id=0,
        decoder_start_token_id=0,
    )
    transformers.MarianMTModel(cfg).save_pretrained(tmp_path / "marian")
    tok.save_pretrained(tmp_path / "marian")
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    capsys.readouterr()
    code = main(
        [
            "lm",
            "finetune",
            "--checkpoint",
            str(tmp_path / "marian"),
            "--lora",
            "rank=2",
            "--data",
            str(tmp_path / "text.txt"),
            "--out",
            str(tmp_path / "ft"),
        ]
    )
    _one_line_error(
        capsys.readouterr().err,
        code,
        "finetune trains language models; this folder's model is encoder-decoder (marian)",
    )


def _one_line_error(err, code, message):
    """Exit code 2 and one `tfmr: error:` line holding `message` (the folder's loaded-from note may precede it)."""
    errors = [line for line in err.splitlines() if line.startswith("tfmr: error:")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1 and message in errors[0], err
