"""`tfmr export --to onnx`: the prefill and cached-step graphs, run by onnxruntime at a batch size
and lengths other than the traced ones, give the model's logits (atol 1e-4)."""
from __future__ import annotations

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
    cfg = ModelConfig(vocab_size=tok.vocab_size, dim=32, layers=2, heads=4, kv_heads=2, context=32, init_std=0.3,
                      pos=Choice("rope"), norm=Choice("rmsnorm"), ffn=Choice("swiglu"), bias=False)
    model = build_model(cfg).eval()
    checkpoint.save(tmp_path / "ckpt", model, to_dict(RunConfig(model=cfg)), tok)
    assert main(["export", "--to", "onnx", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "onnx")]) == 0
    prefill = ort.InferenceSession(str(tmp_path / "onnx" / "prefill.onnx"))
    step = ort.InferenceSession(str(tmp_path / "onnx" / "step.onnx"))
    ids = torch.randint(0, tok.vocab_size, (5, 9), generator=torch.Generator().manual_seed(1))  # (B, T)
    logits, *present = prefill.run(None, {"input_ids": ids[:, :8].numpy()})
    with torch.no_grad():
        full = model(ids).logits
    torch.testing.assert_close(torch.from_numpy(logits), full[:, :8], atol=1e-4, rtol=1e-4)
    names = [i.name for i in step.get_inputs()]
    assert names[0] == "input_ids" and names[1:3] == ["past.0.key", "past.0.value"]
    logits, *after = step.run(None, dict(zip(names, [ids[:, 8:].numpy(), *present])))
    torch.testing.assert_close(torch.from_numpy(logits)[:, 0], full[:, 8], atol=1e-4, rtol=1e-4)
    assert after[0].shape == (5, 2, 9, 8)  # the cache grew by one position


def test_encoder_decoder_is_refused_in_one_line(tmp_path, capsys):
    tok = CharTokenizer.train("abc")
    cfg = ModelConfig(arch="encoder-decoder", vocab_size=tok.vocab_size, dim=16, layers=1, heads=2, context=16)
    checkpoint.save(tmp_path / "ckpt", build_model(cfg), to_dict(RunConfig(model=cfg)), tok)
    code = main(["export", "--to", "onnx", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "o")])
    assert code == 2 and "decoder-only" in capsys.readouterr().err
