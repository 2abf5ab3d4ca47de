"""Outside reference: a random tiny Marian folder written by `save_pretrained`, with a
`tokenizer.json` built here like Marian's (a `</s>` appended to every source; byte-level BPE
trained with the `tokenizers` library, since Marian's own sentencepiece tokenizer has no
tokenizer.json form), translates with `tfmr lm generate` to the text of transformers' greedy (and
beam) `generate`, decoded by the same tokenizer; `tfmr viz attention` draws transformers' encoder
attention; its ONNX graphs, run by onnxruntime, decode transformers' greedy tokens."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tfmr.cli import main  # noqa: E402

TEXT = (
    "The quick brown fox jumps over the lazy dog. Café crème, naïve façade; 東京 and 北京 are cities. "
) * 20
SPECIALS = [
    "</s>",
    "<unk>",
    "<pad>",
]  # Marian's order: end 0, unknown 1; the pad id starts the decoder


def marian_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 0)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    tok = marian_tokenizer()
    torch.manual_seed(0)
    cfg = transformers.MarianConfig(
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=64,
        vocab_size=len(tok),
        pad_token_id=2,
        decoder_start_token_id=2,
        eos_token_id=0,
        forced_eos_token_id=0,
        init_std=0.3,
    )
    model = transformers.MarianMTModel(cfg).eval()
    path = tmp_path_factory.mktemp("marian")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, tok


def _hf_text(model, tok, prompt, **kw):
    ids = tok(prompt, return_tensors="pt").input_ids
    assert ids[0, -1] == 0  # the source ends in </s>, as Marian's tokenizer makes it
    with torch.no_grad():
        out = model.generate(ids, do_sample=False, **kw)[0].tolist()
    assert out[0] == 2  # started from the pad id
    out = out[1:]
    return tok.decode(out[: out.index(0)] if 0 in out else out), out


@pytest.mark.parametrize("prompt", ["The café in 東京", "quick brown dog", "naïve"])
def test_marian_generate_prints_transformers_greedy_translation(marian, prompt, capsys):
    path, model, tok = marian
    expected, out = _hf_text(model, tok, prompt, num_beams=1, max_new_tokens=8)
    assert (
        main(
            [
                "lm",
                "generate",
                "--checkpoint",
                str(path),
                "--prompt",
                prompt,
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
    assert expected and "(model_type marian)" in captured.err


def test_marian_beam_search_prints_transformers_beam_translation(marian, capsys):
    path, model, tok = marian
    expected, _ = _hf_text(model, tok, "The quick fox", num_beams=3, max_new_tokens=8)
    assert (
        main(
            [
                "lm",
                "generate",
                "--checkpoint",
                str(path),
                "--prompt",
                "The quick fox",
                "--beam",
                "3",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == expected + "\n"


def test_encoder_decoder_tfmr_checkpoint_is_refused_in_one_line(marian, tmp_path, capsys):
    path = marian[0]
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
    code = main(
        [
            "lm",
            "generate",
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--prompt",
            "a",
            "--temperature",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "records none" in err and len(err.strip().splitlines()) == 1


def test_viz_attention_draws_the_encoder_attention_transformers_computes(marian, tmp_path, capsys):
    from tfmr.interop import from_pretrained
    from tfmr.viz import attention_weights

    path, model, tok = marian
    ids = tok("The quick fox", return_tensors="pt").input_ids
    with torch.no_grad():
        model.config._attn_implementation = "eager"  # transformers gives weights on its eager path
        ref = model(
            ids, decoder_input_ids=torch.full((1, 1), 2), output_attentions=True
        ).encoder_attentions
    ours = attention_weights(from_pretrained(path).model, ids)
    assert len(ours) == len(ref) == 2
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert (
        main(
            [
                "viz",
                "attention",
                "--checkpoint",
                str(path),
                "--text",
                "The quick fox",
                "--out",
                str(tmp_path / "viz"),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "viz").iterdir()) == ["layer_0.png", "layer_1.png"]


def test_eval_decoding_refuses_an_encoder_decoder_in_one_line(marian, capsys):
    code = main(
        [
            "lm",
            "eval",
            "decoding",
            "--checkpoint",
            str(marian[0]),
            "--data",
            str(marian[0] / "config.json"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("tfmr: error:") and "is encoder-decoder" in err


@pytest.mark.slow
def test_onnx_export_of_a_marian_folder_decodes_transformers_greedy_tokens(marian, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import numpy

    path, model, tok = marian
    assert (
        main(
            [
                "checkpoint",
                "export",
                "onnx",
                "--checkpoint",
                str(path),
                "--out",
                str(tmp_path / "onnx"),
            ]
        )
        == 0
    )
    encoder = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"))
    decoder = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"))
    names = [i.name for i in decoder.get_inputs()]
    batch = tok(["The café in 東京", "quick brown dog and fox"], return_tensors="pt", padding=True)
    assert not batch.attention_mask.all()  # one source is padded
    with torch.no_grad():
        ref = model.generate(
            **batch,
            do_sample=False,
            num_beams=1,
            max_new_tokens=8,
            eos_token_id=None,
            forced_eos_token_id=None,
        )[:, 1:]
    _, src_mask, *cross = encoder.run(None, {"src_ids": batch.input_ids.numpy()})
    assert numpy.array_equal(src_mask, batch.attention_mask.bool().numpy())
    tokens, past, chosen = (
        numpy.full((2, 1), 2, dtype=numpy.int64),
        [numpy.zeros((2, 4, 0, 8), numpy.float32)] * 4,
        [],
    )
    for _ in range(8):
        logits, *past = decoder.run(None, dict(zip(names, [tokens, src_mask, *past, *cross])))
        tokens = logits[:, -1].argmax(-1)[:, None]
        chosen.append(tokens)
    assert torch.equal(torch.from_numpy(numpy.concatenate(chosen, 1)), ref)
