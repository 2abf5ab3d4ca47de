"""The docs as tests: every command of README.md and docs/*.md runs as written (issue #28).

What runs, block by block, in the order a reader meets them (README.md first, then docs/*.md by name):

    ```sh / ```bash     each command (a line, with its backslash continuations) in bash; it must exit 0
    ```console          `$ ` lines are commands; the lines after one are its output as shown: each
                        must appear in what the command printed (`...` stands for anything), and it
                        must fail exactly when the docs show `tfmr: error: ...` under it
    ```python           a whole program: it runs and must exit 0
    ```python fragment  a piece of a program (names from the prose around it): compiled only

Every other block says what it is (```text, ```json, ...): a block without a language fails
`test_every_block_says_what_it_is`, so a command cannot hide in one. No command may print a
traceback. A command that serves until stopped (SERVERS: `tfmr explore`, `tfmr g2p serve`) must
answer on its port; the commands after it in its block (the docs' curl lines) run against it.

Where: one scratch copy of the working folder for the whole file (tfmr/, the docs, a `.venv/bin`
whose `tfmr` and `python` are this interpreter), with what a reader brings (READER_FILES: their
text, a word list; READER_FOLDERS: Hugging Face folders, built tiny) and TFMR_DOCS_SHORT=1, which
caps training steps, time budgets, evaluated words and benchmark repeats (tfmr.programs.short).
`tfmr ...` runs in a fork of one interpreter that imported tfmr once (docs_forkserver.py), which
saves the 3 CPU seconds of imports each of a hundred commands would spend. The README's blocks run
first, whatever is selected: every page is read after the README's quickstart (and AFTER names the
pages that build on another's runs).

What cannot run here (a GPU, the network, torchrun with several processes) is listed in SKIPPED,
one reason each; `test_skipped_commands_are_few_and_still_in_the_docs` keeps that list short and
fails on an entry whose command left the docs. A failing command is reported with the doc file and
line it came from, what went wrong and the end of its output. Each command's time and CPU seconds
are printed (pytest -s shows them).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tfmr import presets, programs
from tfmr.config import RunConfig
from tfmr.tasks.g2p import G2PConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL, CONSOLE, PYTHON = ("sh", "bash"), "console", "python"
TIMEOUT = 600  # seconds (wall clock) for one command: a hung one fails, the suite goes on

# (doc, the command as written, continuations joined, comment dropped; a python block: its first
# line) -> why it cannot run here. At most a fifth of the commands (a test holds it).
GPU, NETWORK = "a CUDA GPU", "the network"
TORCHRUN = "torchrun with several processes (tests/test_distributed.py runs them on CPU)"
NANOGPT = "a nanoGPT checkout and tinyshakespeare (the network)"
SKIPPED = {
    (
        "README.md",
        "make run",
    ): "the set-up installs from the network; docs/g2p.md trains as it does",
    ("README.md", "make test"): "the test suite itself",
    (
        "README.md",
        ".venv/bin/tfmr bench train --preset nanogpt-shakespeare-char --data "
        "PATH/TO/tinyshakespeare.txt --nanogpt PATH/TO/nanoGPT --steps 90",
    ): NANOGPT,
    ("docs/benchmarks.md", "tfmr bench gpu --out runs/bench_gpu"): GPU,
    ("docs/attention.md", "tfmr bench gpu-attention"): GPU + " (its --quick run is below it)",
    ("docs/decoding.md", "tfmr bench gpu-decode --out decode_gpu.md"): GPU,
    ("docs/decoding.md", "tfmr bench gpu-decode --only stories110m --out llama.md"): GPU,
    (
        "docs/ffn_norms_adapters.md",
        "tfmr bench moe-dispatch --device cuda --dtype bfloat16 --tokens 16384 --dim 1024",
    ): GPU,
    (
        "docs/distributed.md",
        "torchrun --standalone --nproc_per_node 2 -m tfmr lm train --preset gpt2-124m --data DATA "
        "--out runs/gpt2 --set train.parallel=ddp",
    ): TORCHRUN,
    (
        "docs/distributed.md",
        "torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 --rdzv_backend c10d --rdzv_endpoint "
        "HOST:29500 --rdzv_id tfmr-run -m tfmr lm train --preset llama-124m --data DATA --out "
        "/shared/runs/llama --set train.parallel=fsdp",
    ): TORCHRUN + ", on two machines",
    (
        "docs/distributed.md",
        "torchrun --nnodes 2 --nproc_per_node 8 --node_rank 1 --rdzv_backend c10d --rdzv_endpoint "
        "HOST:29500 --rdzv_id tfmr-run -m tfmr lm train --preset llama-124m --data DATA --out "
        "/shared/runs/llama --set train.parallel=fsdp",
    ): TORCHRUN + ", on two machines",
    (
        "docs/distributed.md",
        "tfmr checkpoint consolidate runs/llama/checkpoint --out runs/llama/plain",
    ): "the sharded checkpoint of the torchrun lines above",
    ("docs/g2p.md", "pip install 'tfmr[bench]'"): NETWORK,
    ("docs/interop.md", "pip install 'tfmr[onnx]'"): NETWORK,
    (
        "docs/interop.md",
        'tfmr lm generate --checkpoint opus-mt-folder/ --prompt "Guten Morgen" --temperature 0 '
        "--max-new-tokens 40",
    ): "a Marian folder from the Hub (the network); tests/test_hf_seq2seq.py builds one for this",
    (
        "docs/tokenizer.md",
        ".venv/bin/python -m pytest tests/test_bpe.py -q",
    ): "a part of this test suite (make test runs it)",
}


# The pages whose commands use what another page's made (every page comes after the README's)
AFTER = {"docs/objectives.md": ("docs/g2p.md",)}  # runs/g2p, the G2P run

# A command that serves until stopped (its default port): it must answer on its port, then serves
# the commands after it in its block (curl) until the block ends or the next server starts.
SERVERS = {"tfmr explore": 8765, "tfmr g2p serve": 8766}
SERVER_START = 120  # seconds a server may take to answer


# ----------------------------------------------------------------------------- reading the docs
@dataclasses.dataclass
class Block:
    doc: str
    line: int  # of the opening fence, from 1
    lang: str
    info: str
    body: list[str]


@dataclasses.dataclass
class Command:
    doc: str
    line: int
    text: str  # as bash reads it: continuation lines joined
    shown: list[str]  # console: the output shown under it

    @property
    def key(self) -> str:
        """The command without its trailing comment, spaces collapsed (SKIPPED's key)."""
        return " ".join(_drop_comment(self.text).split())


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file."""
    out, lines, i = [], path.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(.*)$", lines[i])
        if not m:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        info = m.group(2).strip()
        indent = len(m.group(1))
        body = [line[indent:] for line in lines[i + 1 : end]]
        out.append(Block(_name(path), i + 1, info.split()[0] if info else "", info, body))
        i = end + 1
    return out


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def _drop_comment(text: str) -> str:
    """`text` less a trailing `# ...` comment (a # after a space, outside quotes)."""
    quote = None
    for k, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or text[k - 1].isspace()):
            return text[:k].rstrip()
    return text.rstrip()


def commands(block: Block) -> list[Command]:
    """The commands of a shell or console block, each with its first line's number."""
    out: list[Command] = []
    k = 0
    while k < len(block.body):
        line = block.body[k]
        first = block.line + 1 + k
        if block.lang == CONSOLE and not line.startswith("$ "):
            if out:
                out[-1].shown.append(line)
            k += 1
            continue
        text = line[2:] if block.lang == CONSOLE else line
        while text.rstrip().endswith("\\") and k + 1 < len(block.body):
            k += 1
            text = text.rstrip()[:-1] + " " + block.body[k].strip()
        if text.strip() and not text.lstrip().startswith("#"):
            out.append(Command(block.doc, first, text.strip(), []))
        k += 1
    return out


def all_blocks() -> list[Block]:
    return [b for path in DOCS for b in blocks(path)]


# ----------------------------------------------------------------------------- the scratch folder
READER_FILES = {  # what a reader brings: their own text, a list of words (and READER_FOLDERS)
    "my_text.txt": "text",
    "input.txt": "text",
    "new.txt": "text",
    "corpus.txt": "text",
    "text.txt": "text",
    "words.txt": "hello\nblorftastic\ntransformer\n",
    "chapter.txt": "It was the best of times, it was the worst of times.\n",
}


def _hf_folder(path: Path, family: str, text: str) -> None:
    """What a reader downloads from the Hugging Face Hub, at a tiny random size: a GPT-2 or Llama
    folder (config.json, model.safetensors) with a byte-level BPE tokenizer.json."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator([text[:20000]], trainer)
    size = dict(vocab_size=tok.get_vocab_size(), hidden_size=32, num_attention_heads=4)
    size.update(bos_token_id=None, eos_token_id=None)  # GPT-2's 50256 is outside this vocabulary
    if family == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_positions=256, **size)
    else:
        cfg = transformers.LlamaConfig(
            num_hidden_layers=2, intermediate_size=64, max_position_embeddings=256, **size
        )
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save(str(path / "tokenizer.json"))


READER_FOLDERS = {"path/to/folder": "gpt2", "hf-llama": "llama"}  # Hugging Face folders


def _reader_text() -> str:
    """A few hundred kB of real English: tfmr's own docs."""
    return "\n".join(p.read_text(encoding="utf-8") for p in DOCS)


FORKSERVER = Path(__file__).with_name("docs_forkserver.py")


def _make_scratch(root: Path) -> dict:
    """A copy of the working folder in `root` and the environment commands run in there: `tfmr`
    (and `python -m tfmr`, `python -c`, `python SCRIPT.py`) go to the fork server
    (docs_forkserver.py), any other `python` is this interpreter."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tfmr", root / "tfmr", ignore=ignore)
    shutil.copytree(ROOT / "docs", root / "docs", ignore=ignore)
    for name in ("README.md", "pyproject.toml", "Makefile"):
        shutil.copy(ROOT / name, root / name)
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python, server = shlex.quote(sys.executable), shlex.quote(str(FORKSERVER))
    forked = f"exec {python} -S {server} run"
    shims = {  # python -m tfmr, -c CODE and SCRIPT.py go to the fork server; the rest runs here
        "tfmr": f'{forked} -m tfmr "$@"',
        "python": f'case "$1" in -m) [ "$2" = tfmr ] && {forked} "$@";; -c|*.py) {forked} "$@";; '
        f'esac\nexec {python} "$@"',
    }
    shims["python3"] = shims["python"]
    for name, body in shims.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    text = _reader_text()
    for name, content in READER_FILES.items():
        (root / name).write_text(text if content == "text" else content, encoding="utf-8")
    for name, family in READER_FOLDERS.items():
        _hf_folder(root / name, family, text)
    sock = root / "forkserver.sock"
    if len(str(sock)) > 100:  # AF_UNIX paths are short
        sock = Path(tempfile.mkdtemp(prefix="tfmr-docs-")) / "fs.sock"
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(root),
        programs.SHORT_ENV: "1",
        "TFMR_CACHE": str(root / ".cache"),
        "TFMR_DOCS_FORKSERVER": str(sock),
        "MPLBACKEND": "Agg",
        "NO_COLOR": "1",
        "OMP_NUM_THREADS": "1",  # each command on one thread: small work, a shared machine
    }


def _start_forkserver(root: Path, env: dict) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, str(FORKSERVER), "serve", env["TFMR_DOCS_FORKSERVER"]],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout.readline().strip() == "ready"
    return server


@dataclasses.dataclass
class Scratch:
    root: Path
    env: dict
    done: dict  # doc -> what went wrong in it (each doc runs once)


def run_command(cmd: Command, scratch: Scratch) -> str | None:
    """Run one command in the scratch folder; None, or what went wrong (doc:line first)."""
    t0, cpu0 = time.perf_counter(), _cpu_seconds(scratch)
    try:
        done = subprocess.run(
            ["bash", "-c", "set -o pipefail\n" + cmd.text],
            cwd=scratch.root,
            env=scratch.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"{cmd.doc}:{cmd.line}: `{cmd.text}` ran past {TIMEOUT} s"
    cpu = _cpu_seconds(scratch) - cpu0
    print(f"{time.perf_counter() - t0:6.1f}s {cpu:6.1f} cpu  {cmd.doc}:{cmd.line}  {cmd.text[:80]}")
    output = done.stdout + done.stderr
    problem = None
    if "Traceback (most recent call last)" in done.stderr:
        problem = "a traceback"
    elif (done.returncode != 0) != _shows_error(cmd) and not _short_model_doubts(done):
        problem = f"exit status {done.returncode}"
    elif cmd.shown:
        missing = [line for line in cmd.shown if not _shown_in(line, output)]
        problem = f"output without {missing[0]!r}" if missing else None
    if problem is None:
        return None
    tail = "\n".join(output.strip().splitlines()[-15:])
    return f"{cmd.doc}:{cmd.line}: `{cmd.text}`: {problem}\n{tail}"


def _cpu_seconds(scratch: Scratch) -> float:
    """The CPU seconds of the commands the fork server ran so far (it logs each one)."""
    log = Path(scratch.env["TFMR_DOCS_FORKSERVER"] + ".cpu")
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(float(line.split("\t")[0]) for line in lines)


def _short_model_doubts(done: subprocess.CompletedProcess) -> bool:
    """Exit status 1 with `low-confidence` words: `tfmr g2p` doubting a model that trained for a few
    steps here (TFMR_DOCS_SHORT), as documented for such predictions."""
    return done.returncode == 1 and "\tlow-confidence\t" in done.stdout


def _shows_error(cmd: Command) -> bool:
    """Whether the docs show the command failing (`tfmr: error: ...` under it): then it must."""
    return any(line.startswith("tfmr: error:") for line in cmd.shown)


def _shown_in(line: str, output: str) -> bool:
    """Whether a line of output as the docs show it (`...` for anything) is in `output`."""
    pieces = [p.strip() for p in line.split("...") if p.strip()]
    if not pieces:
        return True
    pattern = ".*".join(re.escape(p) for p in pieces)
    return any(re.search(pattern, out_line) for out_line in output.splitlines())


def run_python(block: Block, scratch: Scratch) -> str | None:
    """Run a python block as a script in the scratch folder; None, or what went wrong."""
    script = scratch.root / f"doc_block_{Path(block.doc).stem}_{block.line}.py"
    script.write_text("\n".join(block.body) + "\n", encoding="utf-8")
    cmd = Command(block.doc, block.line, f"python {script.name}", [])
    return run_command(cmd, scratch)


def run_doc(doc: str, scratch: Scratch) -> list[str]:
    """Every runnable block of `doc`, in order; what went wrong."""
    failures = []
    for block in all_blocks():
        if block.doc != doc:
            continue
        if block.lang == PYTHON and "fragment" not in block.info.split()[1:]:
            if (doc, block.body[0].strip()) not in SKIPPED:
                failures.append(run_python(block, scratch))
        elif block.lang in (*SHELL, CONSOLE):
            failures += run_shell_block(block, scratch)
    return [f for f in failures if f]


def run_shell_block(block: Block, scratch: Scratch) -> list[str | None]:
    """The commands of a shell block in order, a server kept up until the next one or the end."""
    failures, server = [], None
    try:
        for cmd in commands(block):
            if (block.doc, cmd.key) in SKIPPED:
                continue
            if _port(cmd) is None:
                failures.append(run_command(cmd, scratch))
                continue
            _stop(server)
            server, problem = start_server(cmd, scratch)
            failures.append(problem)
    finally:
        _stop(server)
    return failures


def _port(cmd: Command) -> int | None:
    """The port a server command listens on (--port N, else its default); None for others."""
    words = shlex.split(cmd.key)
    for prefix, port in SERVERS.items():
        if cmd.key.startswith(prefix + " ") or cmd.key == prefix:
            return int(words[words.index("--port") + 1]) if "--port" in words else port
    return None


def start_server(cmd: Command, scratch: Scratch) -> tuple[tuple | None, str | None]:
    """Start a server command; ((its process, port), None) once its port answers, or (None, the
    problem)."""
    port, t0 = _port(cmd), time.perf_counter()
    log = (scratch.root / f"server-{port}.log").open("w")
    proc = subprocess.Popen(
        ["bash", "-c", cmd.text],
        cwd=scratch.root,
        env=scratch.env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    while time.perf_counter() - t0 < SERVER_START and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            print(
                f"{time.perf_counter() - t0:6.1f}s  {cmd.doc}:{cmd.line}  {cmd.text[:90]} (serving)"
            )
            return (proc, port), None
        except OSError:
            time.sleep(0.2)
    _stop((proc, port))
    said = (scratch.root / f"server-{port}.log").read_text()[-2000:]
    return None, f"{cmd.doc}:{cmd.line}: `{cmd.text}` never answered on port {port}\n{said}"


def _stop(server: tuple[subprocess.Popen, int] | None) -> None:
    """Ctrl-C a server (as the docs say), then wait until its port is free."""
    if server is None:
        return
    proc, port = server
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for _ in range(100):  # the fork server's child ends when its caller has gone
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.1)
        except OSError:
            return


def run_once(doc: str, scratch: Scratch) -> list[str]:
    """Run `doc` (after the pages it builds on, AFTER) unless it ran; what went wrong in it."""
    if doc not in scratch.done:
        for before in AFTER.get(doc, ()):
            run_once(before, scratch)
        scratch.done[doc] = run_doc(doc, scratch)
    return scratch.done[doc]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The scratch folder, with the README's commands run in it (every page comes after them)."""
    root = tmp_path_factory.mktemp("docs-scratch")
    made = Scratch(root, _make_scratch(root), {})
    server = _start_forkserver(root, made.env)
    try:
        made.done["README.md"] = run_doc("README.md", made)
        yield made
    finally:
        server.terminate()  # it waits for its children, then ends
        server.wait()


# ----------------------------------------------------------------------------- the tests
@pytest.mark.slow
def test_readme_commands_run_as_written(scratch):
    if scratch.done["README.md"]:
        pytest.fail("\n\n".join(scratch.done["README.md"]), pytrace=False)


@pytest.mark.slow
@pytest.mark.parametrize("doc", [_name(p) for p in DOCS[1:]], ids=lambda d: Path(d).stem)
def test_doc_commands_run_as_written(doc, scratch):
    failures = run_once(doc, scratch)
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def test_every_block_says_what_it_is():
    untagged = [f"{b.doc}:{b.line}" for b in all_blocks() if not b.lang]
    assert not untagged, f"blocks without a language (sh, console, python, text, ...): {untagged}"


def test_console_blocks_start_with_a_command():
    """Output before any `$ ` line would be checked against nothing."""
    consoles = [b for b in all_blocks() if b.lang == CONSOLE]
    bad = [f"{b.doc}:{b.line}" for b in consoles if not (b.body and b.body[0].startswith("$ "))]
    assert not bad, f"console blocks that do not start with `$ COMMAND`: {bad}"


def test_python_fragments_compile():
    for b in all_blocks():
        if b.lang == PYTHON and "fragment" in b.info.split()[1:]:
            compile("\n".join(b.body), f"{b.doc}:{b.line}", "exec")


def test_skipped_commands_are_few_and_still_in_the_docs():
    found = {(c.doc, c.key) for b in all_blocks() for c in _runnable(b)}
    assert len(SKIPPED) * 5 <= len(found), "more than a fifth of the commands are skipped"
    found |= {(b.doc, b.body[0].strip()) for b in all_blocks() if b.lang == PYTHON and b.body}
    gone = [key for key in SKIPPED if key not in found]
    assert not gone, f"SKIPPED lists commands the docs no longer have: {gone}"


def _runnable(block: Block) -> list[Command]:
    return commands(block) if block.lang in (*SHELL, CONSOLE) else []


def test_the_collector_reads_continuations_comments_and_console_output(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```sh\ntfmr a --x 1 \\\n    --y 2   # note\n# a comment line\ntfmr b '#not' # c\n```\n"
        "```console\n$ tfmr c\nout 1\n...\n```\n```text\n$ tfmr d\n```\n"
    )
    found = [c for b in blocks(page) for c in _runnable(b)]
    assert [(c.line, c.key, c.shown) for c in found] == [
        (2, "tfmr a --x 1 --y 2", []),
        (5, "tfmr b '#not'", []),
        (8, "tfmr c", ["out 1", "..."]),
    ]
    assert _shown_in("valid keys: arch, ...", "tfmr: error: valid keys: arch, vocab_size")
    assert not _shown_in("valid keys: dim, ...", "tfmr: error: valid keys: arch, vocab_size")


# ----------------------------------------------------------------------------- shortening
def _flags(preset: str):
    """The parsed config flags of `tfmr ... --preset PRESET`, nothing else given."""
    return type("Args", (), {"preset": preset, "config": None, "set": [], "data": None})


def test_shortening_changes_nothing_unless_asked(monkeypatch):
    monkeypatch.delenv(programs.SHORT_ENV, raising=False)
    for preset, cls in (("g2p-base", G2PConfig), ("default", RunConfig)):
        assert programs.resolve_config(_flags(preset), cls) == presets.resolve(preset, cls=cls)
    assert programs.short("words") is None and programs.short("repeats", 5) == 5
    assert not programs.shortening()
    monkeypatch.setenv(programs.SHORT_ENV, "0")
    assert programs.resolve_config(_flags("g2p-base"), G2PConfig) == presets.resolve(
        "g2p-base", cls=G2PConfig
    )


def test_shortening_caps_training_evaluation_and_repeats(monkeypatch):
    monkeypatch.setenv(programs.SHORT_ENV, "1")
    caps = programs.SHORT_CAPS
    full = presets.resolve("g2p-base", cls=G2PConfig)
    cfg = programs.resolve_config(_flags("g2p-base"), G2PConfig)
    assert full.train.steps > caps["steps"] and cfg.train.steps == caps["steps"]
    assert full.train.keep_last and cfg.train.checkpoint_every == caps["every"]  # its snapshots
    assert cfg.train.batch_tokens == min(full.train.batch_tokens, caps["batch_tokens"])
    assert cfg.data.dev_words == caps["words"] and cfg.train.threads <= caps["threads"]
    assert cfg.model == full.model  # the model is the preset's: only the work is shorter
    assert programs.short("words") == caps["words"]
    assert programs.short("repeats", caps["repeats"] + 4) == caps["repeats"]
    lm = programs.resolve_config(_flags("default"), RunConfig)
    assert lm.train.steps == lm.train.checkpoint_every == caps["steps"]  # no snapshots: one save
    assert lm.train.max_minutes == 0  # no budget stays none
