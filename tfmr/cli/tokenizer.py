"""The `tfmr tokenizer` command: train, encode, decode and show a byte-level BPE tokenizer.

    tfmr tokenizer train  --data PATH --vocab-size N --out DIR [--pattern gpt4] [--overwrite]
    tfmr tokenizer encode --tokenizer DIR TEXT        (prints the ids)
    tfmr tokenizer decode --tokenizer DIR ID...       (prints the text)
    tfmr tokenizer show   --tokenizer DIR TEXT        (token boundaries in colour, ids, counts)

This file holds only argument parsing, corpus reading and printing; the tokenizer is
tfmr/tokenizers/bpe.py. `add_parser(subparsers)` is called by tfmr/cli/__init__.py. Every command
returns an exit code; a user mistake (missing file, non-UTF-8 data, bad id) prints one line
`tfmr: error: ...` and returns 2.
Left out: streaming corpora larger than memory, and training other tokenizer kinds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Background colours that alternate between tokens (black text on yellow, cyan, green, magenta).
_COLOURS = ("\x1b[30;43m", "\x1b[30;46m", "\x1b[30;42m", "\x1b[30;45m")
_RESET = "\x1b[0m"
_VISIBLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class CorpusError(ValueError):
    """The training data cannot be used (missing, empty, not UTF-8)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `tokenizer` and its subcommands to an argparse subparsers object."""
    p = subparsers.add_parser(
        "tokenizer", help="train, encode, decode and show a byte-level BPE tokenizer"
    )
    sub = p.add_subparsers(
        dest="tokenizer_command", required=True, metavar="{train,encode,decode,show}"
    )

    t = sub.add_parser("train", help="train a byte-level BPE tokenizer on a text file or folder")
    t.add_argument(
        "--data", required=True, help="a UTF-8 text file, or a folder searched for --glob files"
    )
    t.add_argument(
        "--vocab-size", type=int, required=True, help="ids in total: 256 bytes + merges + special"
    )
    t.add_argument("--out", required=True, help="folder to write tokenizer.json into")
    t.add_argument(
        "--overwrite", action="store_true", help="replace the tokenizer folder already in --out"
    )
    t.add_argument(
        "--pattern", default="gpt4", help="pre-tokenization: gpt2, gpt4 (default) or a regex"
    )
    t.add_argument(
        "--glob", default="*.txt", help="files to read when --data is a folder (default *.txt)"
    )
    t.add_argument(
        "--special-token",
        action="append",
        default=[],
        dest="special_tokens",
        metavar="TOKEN",
        help="add a special token, e.g. '<|endoftext|>' (repeatable)",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("encode", help="print the ids of TEXT")
    _tokenizer_flag(e)
    e.add_argument("text", metavar="TEXT", help="the text; '-' reads standard input")
    e.add_argument(
        "--allow-special", action="store_true", help="encode special-token strings as special ids"
    )
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="print the text of ids")
    _tokenizer_flag(d)
    d.add_argument("ids", nargs="+", metavar="ID", help="token ids (space or comma separated)")
    d.set_defaults(func=cmd_decode)

    s = sub.add_parser("show", help="show TEXT with its token boundaries, ids and counts")
    _tokenizer_flag(s)
    s.add_argument("text", metavar="TEXT", help="the text; '-' reads standard input")
    s.add_argument("--no-color", action="store_true", help="brackets instead of colours")
    s.add_argument(
        "--color", action="store_true", help="colours even when the output is not a terminal"
    )
    s.add_argument(
        "--allow-special", action="store_true", help="encode special-token strings as special ids"
    )
    s.set_defaults(func=cmd_show)
    return p


def _tokenizer_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tokenizer", required=True, metavar="DIR", help="folder holding tokenizer.json"
    )


def _fail(message: str) -> int:
    print(f"tfmr: error: {message}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------------- corpus
def corpus_files(path: str | Path, glob: str = "*.txt") -> list[Path]:
    """The files to train on: `path` itself, or the files under it matching `glob` (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CorpusError(f"data path not found: {path}")
    files = sorted(p for p in path.rglob(glob) if p.is_file())
    if not files:
        raise CorpusError(f"no files matching {glob!r} under {path}")
    return files


def read_corpus(files: list[Path]) -> list[str]:
    """Read each file as strict UTF-8 (one document per file); refuse an empty corpus."""
    texts = []
    for f in files:
        data = f.read_bytes()
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise CorpusError(
                f"{f} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); convert it first, "
                "e.g. iconv -f latin1 -t utf-8"
            ) from None
    if not any(texts):
        where = files[0] if len(files) == 1 else f"all {len(files)} files"
        raise CorpusError(f"{where} empty: there is no text to train on")
    return texts


# ---------------------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    from ..folders import check_output, staged
    from ..tokenizers.bpe import BPE

    try:  # --out follows tfmr.folders: a new or empty folder, or a tokenizer folder with --overwrite
        out = check_output(args.out, "tokenizer", overwrite=args.overwrite, sources=[args.data])
        files = corpus_files(args.data, args.glob)
        texts = read_corpus(files)
        start = time.perf_counter()
        tok = BPE.train(
            texts,
            args.vocab_size,
            pattern=args.pattern,
            special_tokens=args.special_tokens,
            progress=not args.no_progress,
        )
        seconds = time.perf_counter() - start
        with staged(out) as tmp:
            name = tok.save(tmp).name
        path = Path(args.out) / name
    except (ValueError, OSError) as e:
        return _fail(str(e))
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"trained {tok!r} on {mb:.2f} MB from {len(files)} file(s) in {seconds:.2f} s -> {path}")
    if tok.vocab_size < args.vocab_size:
        print(
            f"note: the corpus ran out of pairs to merge; the vocabulary has {tok.vocab_size} ids"
        )
    return 0


def _load(directory: str):
    from ..tokenizers import load

    return load(directory)


def _read_text(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


def cmd_encode(args) -> int:
    try:
        tok = _load(args.tokenizer)
        text = _read_text(args.text)
        ids = tok.encode(text, allowed_special="all") if args.allow_special else tok.encode(text)
    except (ValueError, OSError) as e:
        return _fail(str(e))
    print(" ".join(map(str, ids)))
    return 0


def parse_ids(items: list[str]) -> list[int]:
    """'1 2,3' style arguments -> [1, 2, 3]; ValueError for anything that is not an integer."""
    ids = []
    for item in items:
        for part in item.replace(",", " ").split():
            try:
                ids.append(int(part))
            except ValueError:
                raise ValueError(f"token ids must be integers, got {part!r}") from None
    return ids


def cmd_decode(args) -> int:
    try:
        tok = _load(args.tokenizer)
        text = tok.decode(parse_ids(args.ids))
    except (ValueError, OSError) as e:
        return _fail(str(e))
    print(text.encode("utf-8", "backslashreplace").decode("utf-8"))  # lone surrogates as \udXXX
    return 0


def token_groups(tok, ids: list[int]) -> list[tuple[str, list[int]]]:
    """Split ids into displayable groups: a token that ends inside a character is grouped with
    the tokens that complete the character (its bytes alone are not text)."""
    groups: list[tuple[str, list[int]]] = []
    buf, members = b"", []
    for i in ids:
        buf += (
            tok.token_bytes(i) if hasattr(tok, "token_bytes") else tok.decode([i]).encode("utf-8")
        )
        members.append(i)
        try:
            text = buf.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            continue
        groups.append((text, members))
        buf, members = b"", []
    if members:
        groups.append((buf.decode("utf-8", "replace"), members))
    return groups


def _visible(text: str) -> str:
    out = []
    for ch in text:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def render(groups: list[tuple[str, list[int]]], colour: bool) -> tuple[str, str]:
    """(text line, ids line): alternating background colours, or [brackets] without colour."""
    texts, ids = [], []
    for n, (text, members) in enumerate(groups):
        label = "+".join(map(str, members))
        if colour:
            c = _COLOURS[n % len(_COLOURS)]
            texts.append(f"{c}{_visible(text)}{_RESET}")
            ids.append(f"{c}{label}{_RESET}")
        else:
            texts.append(f"[{_visible(text)}]")
            ids.append(label)
    return "".join(texts), " ".join(ids)


def stats_line(text: str, n_tokens: int) -> str:
    n_bytes = len(text.encode("utf-8", "surrogatepass"))
    per = f"{n_bytes / n_tokens:.2f}" if n_tokens else "n/a"
    return f"characters: {len(text)}  bytes: {n_bytes}  tokens: {n_tokens}  bytes/token: {per}"


def _use_colour(args) -> bool:
    if args.no_color:
        return False
    if args.color:
        return True
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def cmd_show(args) -> int:
    try:
        tok = _load(args.tokenizer)
        text = _read_text(args.text)
        ids = tok.encode(text, allowed_special="all") if args.allow_special else tok.encode(text)
        groups = token_groups(tok, ids)
    except (ValueError, OSError) as e:
        return _fail(str(e))
    line, id_line = render(groups, _use_colour(args))
    print(line)
    print(id_line)
    print(stats_line(text, len(ids)))
    return 0
