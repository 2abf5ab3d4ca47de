"""The layout of programs apart from the library: one presets registry and one config resolver,
`tfmr bench NAME` for every speed run, `tfmr experiment copytask`, experiments on --set, and an import graph
in which the library never reaches the programs (tfmr/cli, tasks, bench, experiments, explore) and
no program but the command itself reaches the command line (tfmr/cli)."""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tfmr import presets
from tfmr.bench import BENCHES
from tfmr.cli import build_parser, main
from tfmr.config import ConfigError, RunConfig
from tfmr.tasks.g2p import G2PConfig

ROOT = Path(__file__).resolve().parents[1]
# tfmr.g2p is the G2P task's public Python face (pronounce(), over tfmr/tasks and the shipped model): a program;
# tfmr.programs holds what the programs share (argument helpers, the user-error rule)
PROGRAMS = (
    "tfmr.cli",
    "tfmr.tasks",
    "tfmr.bench",
    "tfmr.experiments",
    "tfmr.explore",
    "tfmr.g2p",
    "tfmr.programs",
    "tfmr.__main__",
)
# the command line, and the only programs that may import it: itself and `python -m tfmr`
COMMAND_LINE, ITS_CALLERS = "tfmr.cli", ("tfmr.cli", "tfmr.__main__")


# ----------------------------------------------------------------------------- presets
def test_presets_lists_every_commands_presets_with_its_command(capsys):
    assert main(["presets"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert list(rows) == list(presets.PRESETS)
    for name, command in (
        ("tiny", "tfmr lm train"),
        ("default", "tfmr lm train"),
        ("g2p-small", "tfmr g2p"),
        ("g2p-tiny", "tfmr g2p"),
        ("copytask", "tfmr experiment copytask"),
        ("exp-moe", "tfmr experiment moe"),
    ):
        assert command in rows[name]
    assert "Seconds-long G2P runs for tests" in rows["g2p-tiny"]  # the docstring's first line


def test_presets_verbose_prints_each_config(capsys):
    assert main(["presets", "-v"]) == 0
    out = capsys.readouterr().out
    assert "# g2p-tiny (tfmr g2p): Seconds-long G2P runs" in out and '"dev_words": 50' in out
    assert "# copytask (tfmr experiment copytask)" in out and '"max_len": 14' in out


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_every_preset_resolves_for_its_own_config_class_only(name):
    cls = type(presets.PRESETS[name][1]())
    assert isinstance(presets.get(name, cls), cls)
    other = RunConfig if cls is not RunConfig else G2PConfig
    with pytest.raises(ConfigError, match=f"preset '{name}' is a {cls.__name__} for `tfmr "):
        presets.get(name, other)


def test_resolver_order_preset_then_file_then_data_then_each_set(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("train:\n  steps: 7\n  lr: 0.01\ndata:\n  path: from-file.txt\n")
    cfg = presets.resolve("tiny", file, "from-flag.txt", ["train.steps=9", "train.steps=11"])
    assert (cfg.train.steps, cfg.train.lr, cfg.data.path) == (11, 0.01, "from-flag.txt")
    assert cfg.model.dim == presets.tiny().model.dim  # the rest is the preset's
    with pytest.raises(ConfigError, match="unknown key 'data.path'; valid keys: stress, dev_words"):
        presets.resolve("g2p-tiny", data="words.txt", cls=G2PConfig)


# ----------------------------------------------------------------------------- bench
def test_bench_help_lists_every_bench(capsys):
    assert set(BENCHES) == {
        "train",
        "bpe",
        "cpu-decode",
        "gpu-decode",
        "gpu-attention",
        "g2p",
        "moe-dispatch",
        "gpu",
        "hf-load",
        "g2p-serve",
        "g2p-lengths",
        "g2p-compare",
        "g2p-stream",
        "startup",
        "quant-quality",
        "tables",
    }
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in BENCHES:
        assert f"\n    {name}" in out


@pytest.mark.parametrize("name", list(BENCHES))
def test_every_bench_parser_builds_with_its_defaults(name):
    args = build_parser().parse_args(["bench", name])
    assert args.func is BENCHES[name].main


@pytest.mark.parametrize(
    "argv",
    [
        ["moe-dispatch", "--tokens", "64", "--dim", "16", "--rounds", "1", "--iters", "1"],
        ["gpu-attention", "--quick", "--warmup", "1", "--repeats", "1"],
        [
            "train",
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--no-peer",
            "--set",
            "train.threads=1",
        ],
        ["bpe", "--vocab", "300", "--encode-vocab", "300", "--skip-stdlib", "--repeats", "1"],
        ["hf-load", "--quick", "--rounds", "1"],
    ],
    ids=lambda argv: argv[0],
)
def test_bench_tiny_modes_run(argv, tmp_path, text_file, monkeypatch, capsys):
    if argv[0] == "bpe":
        pytest.importorskip("tokenizers")
        pytest.importorskip("tiktoken")
        argv = argv + ["--data", str(text_file)]
    if argv[0] == "train":
        argv = argv + ["--data", str(text_file)]
    monkeypatch.chdir(tmp_path)  # gpu-attention writes runs/ in the working folder
    assert main(["bench", *argv]) == 0
    assert capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["moe-dispatch", "--device", "nope"], "unknown device 'nope'"),
        (["moe-dispatch", "--top-k", "9"], "--top-k cannot exceed --experts (8)"),
        (["bpe", "--data", "/no/such/file.txt"], "not found: /no/such/file.txt"),
        (["train", "--preset", "g2p-tiny"], "preset 'g2p-tiny' is a G2PConfig for `tfmr g2p`"),
        (["gpu-decode", "--quick", "--new-tokens", "100"], "must fit the model's context (64)"),
    ],
)
def test_bench_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfmr: error: ") and message in err[0]


@pytest.mark.parametrize("argv", [["bench", "nope"], ["bench", "moe-dispatch", "--rounds", "0"]])
def test_bench_unknown_name_or_bad_number_is_argparse_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "Traceback" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- copy task, experiments
def test_copytask_command_and_module_run_the_same_program(tmp_path, capsys):
    out = tmp_path / "ct"
    assert (
        main(
            [
                "experiment",
                "copytask",
                "--preset",
                "copytask-tiny",
                "--steps",
                "2",
                "--out",
                str(out),
                "--no-progress",
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "r.json").read_text())
    assert list(results) == ["plain softmax head", "pointer-generator"]
    assert "(2 steps," in capsys.readouterr().out  # --steps is a shortcut for --set train.steps
    r = subprocess.run(
        [sys.executable, "-m", "tfmr.tasks.copytask", "--set", "train.stepz=3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and r.stderr.startswith("tfmr: error: unknown key 'train.stepz'")
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["length-extrapolation", "norm-depth", "moe"])
def test_experiments_take_the_common_config_flags(name):
    """Without flags an experiment's base run is its preset; --set changes the base it varies."""
    from tfmr.cli.common import resolve_config
    from tfmr.config import to_dict
    from tfmr.experiments import EXPERIMENTS

    parser = argparse.ArgumentParser()
    EXPERIMENTS[name].add_arguments(parser)
    assert to_dict(resolve_config(parser.parse_args([]))) == to_dict(presets.get(f"exp-{name}"))
    args = parser.parse_args(
        ["--set", "model.dim=24", "--set", "train.steps=5", "--preset", "tiny"]
    )
    base = resolve_config(args)
    assert (base.model.dim, base.train.steps, base.model.layers) == (
        24,
        5,
        presets.tiny().model.layers,
    )
    for gone in ("--dim", "--steps", "--lr", "--layers"):  # settings are --set keys now
        with pytest.raises(SystemExit):
            parser.parse_args([gone, "3"])


# ----------------------------------------------------------------------------- the import graph
def _imports() -> dict[str, set[str]]:
    """tfmr module -> the tfmr modules it imports anywhere in its file (function-level too)."""
    files = {}
    for f in (ROOT / "tfmr").rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for name, f in files.items():
        package = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = (
                    ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(
                        "."
                    )
                    if node.level
                    else node.module or ""
                )
                found |= {
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names
                }
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def _is_program(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in PROGRAMS)


def test_the_library_never_imports_the_programs():
    graph = _imports()
    wrong = {
        m: sorted(filter(_is_program, deps)) for m, deps in graph.items() if not _is_program(m)
    }
    assert {m: d for m, d in wrong.items() if d} == {}
    assert (
        len(graph) > 40 and "tfmr.programs" in graph["tfmr.tasks.copytask"]
    )  # the scan sees the programs


def _within(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _command_line_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Program -> the tfmr.cli modules it imports, for every program that may not (all but the
    command line itself and `python -m tfmr`)."""
    wrong = {
        m: sorted(d for d in deps if _within(d, [COMMAND_LINE]))
        for m, deps in graph.items()
        if _is_program(m) and not _within(m, ITS_CALLERS)
    }
    return {m: d for m, d in wrong.items() if d}


def test_programs_never_import_the_command_line():
    """Tasks, benchmarks, experiments, explore and tfmr.g2p take their argument helpers from
    tfmr.programs; only the command line itself and `python -m tfmr` import tfmr.cli."""
    graph = _imports()
    assert _command_line_imports(graph) == {}
    assert (
        "tfmr.cli" in graph["tfmr.__main__"] and "tfmr.cli.common" in graph["tfmr.cli.generate"]
    )  # the scan sees cli


def test_the_rule_names_a_program_that_imports_the_command_line():
    graph = {
        "tfmr.bench.bad": {"tfmr.cli.common", "tfmr.programs"},
        "tfmr.tasks.g2p": {"tfmr.cli"},
        "tfmr.cli.generate": {"tfmr.cli.common"},
        "tfmr.__main__": {"tfmr.cli"},
        "tfmr.model": {"tfmr.kernels"},
    }
    assert _command_line_imports(graph) == {
        "tfmr.bench.bad": ["tfmr.cli.common"],
        "tfmr.tasks.g2p": ["tfmr.cli"],
    }


def test_no_import_cycle_runs_through_a_program():
    graph = _imports()
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert [c for c in cycles if any(map(_is_program, c))] == []
