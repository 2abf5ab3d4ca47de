"""`tfmr bench tables` (one command for the CPU tables of docs/benchmarks.md) and `tfmr bench
quant-quality` (perplexity and G2P WER / PER at each precision).

The tables command is run at --quick sizes on two cheap sections into a copy of the doc: their
blocks are replaced (machine line, command, table) and every byte outside them is kept. The
machine line's busy warning, the marker checks and the quality figures are checked on their own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tfmr import ModelConfig, RunConfig, build_model, checkpoint
from tfmr.bench import gpu_decode, quant_quality, tables
from tfmr.cli import main
from tfmr.config import ConfigError, to_dict
from tfmr.quantize import quantize_
from tfmr.tokenizers.char import CharTokenizer

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SMALL = ModelConfig(vocab_size=48, dim=32, layers=2, heads=4, context=16, tie_embeddings=False)


def _between(text: str, name: str) -> str:
    start, end = tables.markers(name)
    return text.split(start, 1)[1].split(end, 1)[0]


def _outside(text: str, names) -> str:
    for name in names:
        text = text.replace(_between(text, name), "")
    return text


def _tfmr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tfmr", *args], capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_tables_quick_rewrites_the_chosen_blocks_and_nothing_else(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC.read_text(encoding="utf-8"), encoding="utf-8")
    before = doc.read_text(encoding="utf-8")
    chosen = ["hf-load", "quant-quality"]
    r = _tfmr("bench", "tables", "--quick", "--only", ",".join(chosen), "--doc", str(doc))
    assert r.returncode == 0, r.stderr[-3000:]
    after = doc.read_text(encoding="utf-8")
    assert _outside(after, chosen) == _outside(before, chosen)
    for name in set(tables.SECTIONS) - set(chosen):
        assert _between(after, name) == _between(before, name)
    load = _between(after, "hf-load")
    assert load != _between(before, "hf-load")
    assert re.search(
        r"^machine: .+ \(native bf16: (yes|no)\), \d+ threads?, load average [\d.]+ at start "
        r"and [\d.]+ at end; torch \S+; \d{4}-\d\d-\d\d$",
        load,
        re.M,
    )
    assert "command: `tfmr bench hf-load --quick --rounds 1 --json FILE.json`" in load
    assert str(tmp_path) not in after  # paths are shown as placeholders
    assert re.search(r"^\| tfmr \| \d+\.\d{3} \|$", load, re.M)
    quality = _between(after, "quant-quality")
    rows = re.findall(r"^\| (fp32|bf16|int8) \| ([\d.]+) \| ([\d.]+)% \|", quality, re.M)
    assert [w for w, _, _ in rows] == ["fp32", "bf16", "int8"]
    mb = {w: float(m) for w, m, _ in rows}
    assert mb["bf16"] == pytest.approx(mb["fp32"] / 2, rel=0.01) and mb["int8"] < mb["fp32"] / 3
    assert "greedy, 20 test words" in quality


def test_a_busy_machine_puts_a_warning_in_the_table():
    threads = torch.get_num_threads()
    assert tables.machine_line(0.0, threads + 0.5)[1] is None  # the bench's own threads: not busy
    for start, end in ((threads + 0.6, 0.0), (0.0, threads + 0.6)):
        line, warning = tables.machine_line(start, end)
        assert f"load average {start} at start and {end} at end" in line
        assert warning and warning.startswith("> **Warning: the machine was busy**")
    args = type("Args", (), {"quick": False, "data": None, "nanogpt": None})()
    argv = ["--json", tables.Arg("/x/y.json", "FILE.json")]
    block = tables.block("hf-load", args, argv, ["| loader | seconds |"], 0.0, threads + 1.0)
    assert "> **Warning: the machine was busy**" in block and "/x/y.json" not in block
    assert block.endswith("| loader | seconds |")


def test_tables_name_no_path_of_this_machine(tmp_path):
    (tmp_path / "g2p").mkdir()
    row = {"name": "model, greedy", "words_per_s": 1234.4, "one_word_s": 0.0123, "mark": ""}
    report = {"model": "the shipped model (/abs/tfmr/tasks/g2p_model)", "parameters": 3.16e6}
    report |= {"test_words": 6261, "calls": 50, "rows": [{**row, "wer": 0.2845, "per": 0.0697}]}
    (tmp_path / "g2p" / "g2p_bench.json").write_text(json.dumps(report))
    lines = tables.g2p_table(None, tmp_path)
    assert lines[0].startswith("the shipped model, 3.16M parameters, 6,261 test words")
    assert "| model, greedy | 1,234 | 12.300 ms | 28.45% | 6.97% |" in lines
    assert "/abs" not in "\n".join(lines)
    train = {"corpus": "stdlib .py", "vocab": 300, "hf_threads": 2, "hf_s": 3.0}
    train |= {"hf_1thread_s": 4.0, "tfmr_gpt4_s": 2.0}
    encoding = {"corpus": "t.txt", "text_mb": 1.0, "vocab": 300, "same_ids": True}
    encoding |= {
        f"{k}_mb_s": 1.0 for k in ("tiktoken", "tfmr_fast", "tfmr_pure_cold", "tfmr_pure_warm")
    }
    (tmp_path / "bpe.json").write_text(
        json.dumps({"training": [train], "encoding": {**encoding, "fast_vs_tiktoken": 1.0}})
    )
    assert "| stdlib .py | 300 | 3.000 (2 thr; 1 thr: 4.000) | - | 2.000 | 1.50 |" in (
        tables.bpe_table(None, tmp_path)
    )


def test_replace_block_keeps_everything_outside_the_markers():
    start, end = tables.markers("bpe")
    text = f"head\n{start}\nold\nrows\n{end}\ntail {start[:4]}\n"
    assert (
        tables.replace_block(text, "bpe", "new\n")
        == f"head\n{start}\nnew\n{end}\ntail {start[:4]}\n"
    )


def test_the_doc_has_markers_for_every_table():
    tables.check_markers(DOC.read_text(encoding="utf-8"), list(tables.SECTIONS), DOC)


def test_missing_or_misordered_markers_are_refused_before_any_bench_runs(tmp_path, capsys):
    start, end = tables.markers("g2p")
    with pytest.raises(ConfigError, match="needs one"):
        tables.check_markers(f"{end}\n{start}\n", ["g2p"], tmp_path / "d.md")
    doc = tmp_path / "d.md"
    doc.write_text("# no markers\n")
    assert main(["bench", "tables", "--only", "g2p", "--doc", str(doc)]) == 2
    out, err = capsys.readouterr()
    assert "== g2p" not in out and len(err.strip().splitlines()) == 1
    assert f"needs one `{start}`" in err and doc.read_text() == "# no markers\n"
    assert main(["bench", "tables", "--only", "g2p,nope"]) == 2
    assert "each must be one of train, cpu-decode" in capsys.readouterr().err


# ----------------------------------------------------------------------------- quant-quality
def _model(cfg=SMALL, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    model = _model()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: the uniform distribution
    ids = np.arange(200) % SMALL.vocab_size
    ppl, tokens = quant_quality.perplexity(model, ids, SMALL.context, windows=5, batch=2)
    assert tokens == 5 * SMALL.context and ppl == pytest.approx(SMALL.vocab_size, rel=1e-5)
    with pytest.raises(ConfigError, match="one window needs 17"):
        quant_quality.perplexity(model, ids[:10], SMALL.context, windows=5)


def test_matrix_bytes_counts_what_each_precision_stores():
    model = _model()
    dense = quant_quality.matrix_bytes(model)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert dense == 4 * sum(m.weight.numel() for m in linear)
    bf16 = quant_quality.matrix_bytes(quantize_(_model(), "bf16"))
    int8 = quant_quality.matrix_bytes(quantize_(_model(), "int8"))
    assert bf16 == dense // 2
    assert int8 == dense // 4 + 2 * sum(m.out_features for m in linear)  # one bf16 scale a row


def test_lm_quality_reads_a_checkpoint_and_scores_its_held_out_tail(tmp_path):
    text = "".join(chr(97 + (i * 7 + i // 5) % 26) for i in range(3000))
    (tmp_path / "text.txt").write_text(text)
    tok = CharTokenizer.train(text)
    cfg = RunConfig(model=dataclasses.replace(SMALL, vocab_size=tok.vocab_size))
    cfg.data.path = str(tmp_path / "text.txt")
    model = _model(cfg.model)
    checkpoint.save(tmp_path / "ckpt", model, to_dict(cfg), tok)
    result = quant_quality.lm_quality(str(tmp_path / "ckpt"), windows=4)
    assert [r["weights"] for r in result["rows"]] == ["fp32", "bf16", "int8"]
    held_out = np.asarray(tok.encode(text))[-300:]  # data.val_fraction 0.1 of 3,000 characters
    flat = torch.from_numpy(held_out[: 4 * 16 + 1].astype(np.int64))
    with torch.no_grad():
        loss = model(flat[:-1].view(4, 16), flat[1:].view(4, 16)).loss  # the model's own loss
    fp32, bf16, int8 = result["rows"]
    assert result["tokens"] == 64 and fp32["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert fp32["change"] == 0 and abs(bf16["change"]) < 0.01 and abs(int8["change"]) < 0.02
    assert json.loads(json.dumps(result)) == result  # what --json writes


def test_lm_quality_refuses_a_quantized_checkpoint_in_one_line(tmp_path):
    cfg = RunConfig(model=SMALL)
    cfg.decode.weights = "int8"
    tok = CharTokenizer([chr(48 + i) for i in range(SMALL.vocab_size)])
    checkpoint.save(tmp_path / "q", quantize_(_model(), "int8"), to_dict(cfg), tok)
    with pytest.raises(ConfigError, match="is quantized already") as e:
        quant_quality.lm_quality(str(tmp_path / "q"))
    assert "\n" not in str(e.value)


def test_cpu_decode_report_carries_the_perplexity_table(tmp_path):
    quality = {
        "model": "a model",
        "tokens": 64,
        "rows": [
            {"weights": w, "matrices_mb": mb, "perplexity": p, "change": p / 5.0 - 1}
            for w, mb, p in (("fp32", 4.0, 5.0), ("bf16", 2.0, 5.01), ("int8", 1.1, 5.05))
        ],
    }
    env = {"device": "cpu", "dtype": "float32"}
    gpu_decode.write_report(str(tmp_path / "d.md"), [], env, 1e9, quality)
    md = (tmp_path / "d.md").read_text()
    assert "| int8 | 1.10 | 5.0500 | +1.000% |" in md and "| fp32 | 4.00 | 5.0000 | +0.000% |" in md
    assert json.loads((tmp_path / "d.json").read_text())["quality"] == quality


@pytest.mark.slow
def test_g2p_quality_scores_the_shipped_model_at_each_precision():
    from tfmr.tasks import g2p

    result = quant_quality.g2p_quality(limit=40, log=lambda *_: None)
    fp32, bf16, int8 = result["rows"]
    model, _, cfg = g2p.load_shipped()
    ref = g2p.TASK.evaluate(model, g2p.TASK.load_data(cfg), "test", 1, cfg.decode.max_len, limit=40)
    assert result["words"] == 40 and (fp32["wer"], fp32["per"]) == g2p.stress_free(ref)
    assert (
        fp32["same_as_fp32"] == 1.0 and bf16["same_as_fp32"] >= 0.9 and int8["same_as_fp32"] >= 0.9
    )
    assert int8["matrices_mb"] < bf16["matrices_mb"] < fp32["matrices_mb"]


def test_quant_quality_refuses_an_unknown_part_in_one_line(capsys):
    assert main(["bench", "quant-quality", "--only", "lm,wer"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "must be one of lm, g2p, got 'wer'" in err
