"""`tfmr checkpoint export onnx`: the prefill and cached-step graphs (decoder-only), and the encoder and
cached decoder-step graphs (encoder-decoder), run by onnxruntime at batch sizes and lengths other
than the traced ones, give the model's outputs (atol 1e-4), also with dropout in the config;
greedy decoding run entirely through onnxruntime picks tfmr's tokens, for a random model and for
the shipped G2P model. Weight-only quantized models (int8, bf16) export their stored matrices and
match tfmr's quantized logits within a stated tolerance (see the section at the end)."""

from __future__ import annotations

import numpy
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from tfmr import Choice, ModelConfig, RunConfig, build_model, checkpoint  # noqa: E402
from tfmr.cli import main  # noqa: E402
from tfmr.config import to_dict  # noqa: E402
from tfmr.tokenizers import CharTokenizer  # noqa: E402


@pytest.mark.slow
def test_prefill_then_one_cached_step_match_the_model(tmp_path, capsys):
    tok = CharTokenizer.train("abcdefghij")
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        dim=32,
        layers=2,
        heads=4,
        kv_heads=2,
        context=32,
        init_std=0.3,
        pos=Choice("rope"),
        norm=Choice("rmsnorm"),
        ffn=Choice("swiglu"),
        bias=False,
        dropout=0.1,
    )  # a trained checkpoint's dropout: the export must run the model in eval mode
    model = build_model(cfg).eval()
    checkpoint.save(tmp_path / "ckpt", model, to_dict(RunConfig(model=cfg)), tok)
    assert (
        main(
            [
                "checkpoint",
                "export",
                "onnx",
                "--checkpoint",
                str(tmp_path / "ckpt"),
                "--out",
                str(tmp_path / "onnx"),
            ]
        )
        == 0
    )
    prefill = ort.InferenceSession(str(tmp_path / "onnx" / "prefill.onnx"))
    step = ort.InferenceSession(str(tmp_path / "onnx" / "step.onnx"))
    ids = torch.randint(
        0, tok.vocab_size, (5, 9), generator=torch.Generator().manual_seed(1)
    )  # (B, T)
    logits, *present = prefill.run(None, {"input_ids": ids[:, :8].numpy()})
    with torch.no_grad():
        full = model(ids).logits
    torch.testing.assert_close(torch.from_numpy(logits), full[:, :8], atol=1e-4, rtol=1e-4)
    names = [i.name for i in step.get_inputs()]
    assert names[0] == "input_ids" and names[1:3] == ["past.0.key", "past.0.value"]
    logits, *after = step.run(None, dict(zip(names, [ids[:, 8:].numpy(), *present])))
    torch.testing.assert_close(torch.from_numpy(logits)[:, 0], full[:, 8], atol=1e-4, rtol=1e-4)
    assert after[0].shape == (5, 2, 9, 8)  # the cache grew by one position


def _encoder_decoder_checkpoint(tmp_path):
    tok = CharTokenizer.train("abcdefghij")
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="encoder-decoder",
        vocab_size=tok.vocab_size,
        src_vocab_size=tok.vocab_size + 3,
        dim=32,
        layers=2,
        encoder_layers=1,
        heads=4,
        kv_heads=2,
        context=32,
        init_std=1.0,
        pad_id=0,
        share_embeddings=False,
        tie_embeddings=False,
        pos=Choice("sinusoidal"),
        dropout=0.1,
    )
    model = build_model(cfg).eval()
    checkpoint.save(tmp_path / "ckpt", model, to_dict(RunConfig(model=cfg)), tok)
    return model


def _padded_source(batch, length, vocab, seed):
    src = torch.randint(
        1, vocab, (batch, length), generator=torch.Generator().manual_seed(seed)
    )  # (B, S)
    src[-1, length - 2 :] = 0  # the last row is padded
    return src


@pytest.mark.slow
def test_encoder_decoder_encoder_and_cached_steps_match_the_model(tmp_path):
    model = _encoder_decoder_checkpoint(tmp_path)
    assert (
        main(
            [
                "checkpoint",
                "export",
                "onnx",
                "--checkpoint",
                str(tmp_path / "ckpt"),
                "--out",
                str(tmp_path / "onnx"),
            ]
        )
        == 0
    )
    encoder = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"))
    decoder = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"))
    names = [i.name for i in decoder.get_inputs()]
    assert (
        names[:4] == ["input_ids", "src_mask", "past.0.key", "past.0.value"]
        and names[-1] == "cross.1.value"
    )
    for batch, length, seed in ((2, 6, 1), (5, 11, 2)):  # dynamic batch and source length
        src = _padded_source(batch, length, model.cfg.src_vocab_size, seed)
        memory, src_mask, *cross = encoder.run(None, {"src_ids": src.numpy()})
        with torch.no_grad():
            ref_memory, ref_mask = model.encode(src)
        torch.testing.assert_close(torch.from_numpy(memory), ref_memory, atol=1e-4, rtol=1e-4)
        assert torch.equal(torch.from_numpy(src_mask), ref_mask)
        tgt = torch.randint(
            1, model.cfg.vocab_size, (batch, 4), generator=torch.Generator().manual_seed(seed)
        )
        with torch.no_grad():
            full = model(src, tgt).logits  # teacher forcing over the whole target: (B, 4, V)
        past = [numpy.zeros((batch, 2, 0, 8), dtype=numpy.float32)] * 4
        for t, width in (
            (0, 2),
            (2, 1),
            (3, 1),
        ):  # two tokens from an empty past, then one at a time
            logits, *past = decoder.run(
                None, dict(zip(names, [tgt[:, t : t + width].numpy(), src_mask, *past, *cross]))
            )
            torch.testing.assert_close(
                torch.from_numpy(logits), full[:, t : t + width], atol=1e-4, rtol=1e-4
            )
        assert past[0].shape == (batch, 2, 4, 8)


@pytest.mark.slow
def test_greedy_decoding_through_onnxruntime_gives_tfmrs_tokens(tmp_path):
    from tfmr.decode import greedy
    from tfmr.interop.onnx_export import empty_past, export_onnx

    model = _encoder_decoder_checkpoint(tmp_path)
    export_onnx(model, tmp_path / "onnx")
    assert not any(m.training for m in model.modules())  # exporting left the model in eval mode
    encoder = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"))
    decoder = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"))
    names = [i.name for i in decoder.get_inputs()]
    src = _padded_source(3, 9, model.cfg.src_vocab_size, 3)
    _, src_mask, *cross = encoder.run(None, {"src_ids": src.numpy()})
    tokens, past, chosen = (
        numpy.ones((3, 1), dtype=numpy.int64),
        [t.numpy() for t in empty_past(model, 3)],
        [],
    )
    for _ in range(12):
        logits, *past = decoder.run(None, dict(zip(names, [tokens, src_mask, *past, *cross])))
        tokens = logits[:, -1].argmax(-1)[:, None]
        chosen.append(tokens)
    expected = greedy(model, torch.ones(3, 1, dtype=torch.long), 12, src=src)[:, 1:]
    assert torch.equal(torch.from_numpy(numpy.concatenate(chosen, 1)), expected)
    assert len(set(expected.flatten().tolist())) > 3  # not one token repeated everywhere


def test_encoder_only_is_refused_in_one_line(tmp_path, capsys):
    tok = CharTokenizer.train("abc")
    cfg = ModelConfig(
        arch="encoder", vocab_size=tok.vocab_size, dim=16, layers=1, heads=2, context=16
    )
    checkpoint.save(tmp_path / "ckpt", build_model(cfg), to_dict(RunConfig(model=cfg)), tok)
    code = main(
        [
            "checkpoint",
            "export",
            "onnx",
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and "decoder-only and encoder-decoder" in err
        and len(err.strip().splitlines()) == 1
    )


@pytest.mark.slow
def test_the_shipped_g2p_model_exports_and_decodes_words_through_onnxruntime(tmp_path, capsys):
    from pathlib import Path

    from tfmr.seq2seq import BOS, EOS, greedy_decode, pad_batch
    from tfmr.tasks.g2p import G2PConfig
    from tfmr.tasks.symbols import load_run

    shipped = Path(__file__).resolve().parents[1] / "tfmr" / "tasks" / "g2p_model"
    assert (
        main(
            [
                "checkpoint",
                "export",
                "onnx",
                "--checkpoint",
                str(shipped),
                "--out",
                str(tmp_path / "onnx"),
            ]
        )
        == 0
    )
    model, vocab, cfg = load_run(shipped, G2PConfig)
    model = model.float()
    heads, head_dim, layers = cfg.model.heads, cfg.model.dim // cfg.model.heads, cfg.model.layers
    src = pad_batch(
        [vocab.src.encode(list(w)) for w in ("hello", "transformer", "cat")]
    )  # (3, S), padded
    encoder = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"))
    decoder = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"))
    names = [i.name for i in decoder.get_inputs()]
    _, src_mask, *cross = encoder.run(None, {"src_ids": src.numpy()})
    past = [numpy.zeros((3, heads, 0, head_dim), numpy.float32)] * (
        2 * layers
    )  # (B, heads, 0 positions, head_dim)
    tokens, chosen = numpy.full((3, 1), BOS, dtype=numpy.int64), []
    for _ in range(20):
        logits, *past = decoder.run(None, dict(zip(names, [tokens, src_mask, *past, *cross])))
        tokens = logits[:, -1].argmax(-1)[:, None]
        chosen.append(tokens[:, 0].tolist())
    rows = [list(r) for r in zip(*chosen)]
    got = [r[: r.index(EOS)] if EOS in r else r for r in rows]
    assert got == greedy_decode(model, src, 20)
    assert [p.rstrip("012") for p in vocab.tgt.decode(got[2])] == [
        "K",
        "AE",
        "T",
    ]  # cat (with stress if predicted)


def test_export_prints_the_graphs_and_no_torch_warnings(tmp_path, capfd, recwarn):
    """torch's tracer warns on every Python bool it freezes and its TorchScript exporter on its own
    deprecation; tfmr checks the graphs at other shapes instead, so the user sees only the files."""
    tok = CharTokenizer.train("abcdefghij")
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, dim=16, layers=1, heads=2, context=16, pos=Choice("rope")
    )
    checkpoint.save(tmp_path / "ckpt", build_model(cfg), to_dict(RunConfig(model=cfg)), tok)
    capfd.readouterr()
    recwarn.clear()
    assert (
        main(
            [
                "checkpoint",
                "export",
                "onnx",
                "--checkpoint",
                str(tmp_path / "ckpt"),
                "--out",
                str(tmp_path / "onnx"),
            ]
        )
        == 0
    )
    out, err = capfd.readouterr()
    assert err == "" and [str(w.message)[:80] for w in recwarn] == []
    assert out.splitlines() == [
        str(tmp_path / "onnx" / name) for name in ("prefill.onnx", "step.onnx")
    ]


# ----------------------------------------------------------------------------- quantized weights
# A quantized model's graph stores the int8 matrices (DequantizeLinear, per-axis scales) or the bf16
# ones (Cast) and multiplies in fp32: onnxruntime (fused MatMulNBits at fp32 activations,
# interop.onnx_export.session) equals the traced arithmetic at atol 1e-4 (the exporter's own check),
# and tfmr's int8 / bf16 logits within the tolerance of tests/test_quantize.py (max |difference| <=
# 2% / 1% of max |logit|): tfmr's kernels round the activations to bf16, the graph does not.
QUANTIZED_TOLERANCE = {"int8": 0.02, "bf16": 0.01}
ONNX_INT8, ONNX_BF16 = 3, 16  # onnx.TensorProto data types


def _llama_like():
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=64,
        dim=32,
        layers=2,
        heads=4,
        kv_heads=2,
        context=32,
        pos=Choice("rope"),
        norm=Choice("rmsnorm"),
        ffn=Choice("swiglu"),
        bias=False,
        tie_embeddings=False,
    )
    return build_model(cfg).eval()


def _initializers(path):
    """{onnx data type: bytes} of the graph's stored tensors."""
    import onnx
    from onnx import numpy_helper

    sizes: dict = {}
    for t in onnx.load(str(path)).graph.initializer:
        sizes[t.data_type] = sizes.get(t.data_type, 0) + numpy_helper.to_array(t).nbytes
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["int8", "bf16"])
def test_a_quantized_model_exports_its_stored_matrices_and_matches_tfmr(weights, tmp_path):
    import copy

    import onnx

    from tfmr.interop.onnx_export import export_onnx, session
    from tfmr.quantize import WeightOnlyLinear, quantize_

    model = _llama_like()
    q = quantize_(copy.deepcopy(model), weights)
    layers = sum(isinstance(m, WeightOnlyLinear) for m in q.modules())
    fp32 = export_onnx(model, tmp_path / "fp32")
    paths = export_onnx(q, tmp_path / weights)  # the exporter's check ran at atol 1e-4
    ops = [n.op_type for n in onnx.load(str(paths[0])).graph.node]
    op = {"int8": "DequantizeLinear", "bf16": "Cast"}[weights]
    assert ops.count(op) >= layers and (weights == "bf16" or "DequantizeLinear" in ops)
    stored, dense = _initializers(paths[0]), _initializers(fp32[0])
    kind = {"int8": ONNX_INT8, "bf16": ONNX_BF16}[weights]
    assert stored[kind] > 0 and sum(stored.values()) < 0.6 * sum(dense.values())
    ids = torch.randint(0, 64, (3, 9), generator=torch.Generator().manual_seed(4))  # (B, T)
    with torch.no_grad():
        ref = q(ids).logits
    got = torch.from_numpy(session(paths[0]).run(None, {"input_ids": ids.numpy()})[0])
    assert (got - ref).abs().max() <= QUANTIZED_TOLERANCE[weights] * ref.abs().max()


def test_a_quantized_kind_without_an_onnx_operator_is_refused_in_one_line(tmp_path):
    from tfmr.config import ConfigError
    from tfmr.interop.onnx_export import export_onnx
    from tfmr.quantize import Int8Linear, quantize_

    class NoOnnx(Int8Linear):
        weights, onnx = "int4-like", ""

    q = quantize_(_llama_like(), "int8")
    head = q.lm_head
    q.lm_head = NoOnnx(head.in_features, head.out_features, False)
    with pytest.raises(ConfigError, match=r"ONNX export of int4-like weights \(lm_head\)") as e:
        export_onnx(q, tmp_path / "onnx")
    assert "\n" not in str(e.value) and not (tmp_path / "onnx").exists()


@pytest.mark.slow
def test_the_shipped_g2p_model_in_int8_exports_and_decodes_words_through_onnxruntime(tmp_path):
    from pathlib import Path

    from tfmr.interop.onnx_export import session
    from tfmr.seq2seq import BOS, EOS, greedy_decode, pad_batch
    from tfmr.tasks.g2p import G2PConfig
    from tfmr.tasks.symbols import load_run

    shipped = Path(__file__).resolve().parents[1] / "tfmr" / "tasks" / "g2p_model"
    q, o = str(tmp_path / "int8"), str(tmp_path / "onnx")
    assert (
        main(["checkpoint", "quantize", "--checkpoint", str(shipped), "--to", "int8", "--out", q])
        == 0
    )
    assert main(["checkpoint", "export", "onnx", "--checkpoint", q, "--out", o]) == 0
    model, vocab, cfg = load_run(q, G2PConfig)
    assert model.quantized == "int8"
    assert _initializers(tmp_path / "onnx" / "decoder.onnx")[ONNX_INT8] > 0
    heads, head_dim, layers = cfg.model.heads, cfg.model.dim // cfg.model.heads, cfg.model.layers
    src = pad_batch([vocab.src.encode(list(w)) for w in ("hello", "transformer", "cat")])  # (3, S)
    encoder, decoder = (
        session(tmp_path / "onnx" / "encoder.onnx"),
        session(tmp_path / "onnx" / "decoder.onnx"),
    )
    names = [i.name for i in decoder.get_inputs()]
    _, src_mask, *cross = encoder.run(None, {"src_ids": src.numpy()})
    past = [numpy.zeros((3, heads, 0, head_dim), numpy.float32)] * (2 * layers)
    tokens, chosen = numpy.full((3, 1), BOS, dtype=numpy.int64), []
    for _ in range(20):
        logits, *past = decoder.run(None, dict(zip(names, [tokens, src_mask, *past, *cross])))
        tokens = logits[:, -1].argmax(-1)[:, None]
        chosen.append(tokens[:, 0].tolist())
    rows = [list(r) for r in zip(*chosen)]
    got = [r[: r.index(EOS)] if EOS in r else r for r in rows]
    assert got == greedy_decode(model, src, 20)  # tfmr's int8 model picks the same phonemes
