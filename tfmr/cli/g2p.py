"""`tfmr g2p VERB`: grapheme-to-phoneme on CMUdict (the task is tfmr/tasks/g2p.py).

    tfmr g2p WORD ... [-] [--file FILE] [--model-only] [--checkpoint DIR] [--beam K] [--format ipa] [--stress]
    tfmr g2p --text "TEXT" | --text - [--join] [--all] [--format arpabet|ipa] [--stress]
    tfmr g2p pronounce WORD ...          (the same as words alone; for words such as 'train')
    tfmr g2p train [--preset g2p-small] [--config FILE] [--set key=value ...] [--out DIR] [--resume]
    tfmr g2p eval [--checkpoint DIR] [--split test] [--beam K ...] [--limit N]
    tfmr g2p export --checkpoint RUN/checkpoint --out DIR
    tfmr g2p finetune --objective scst|mrt|reinforce --reward per|exact|bleu [--checkpoint DIR] --out RUN
    tfmr g2p serve [--port 8766] [--host 127.0.0.1] [--checkpoint DIR] [--beam K]      (cli/serve.py)

Each verb's parser owns its flags (`tfmr g2p export --beam 5` is argparse's one-line error). Words
right after `g2p` are the verb `pronounce` (cli/spellings.py), so `tfmr g2p hello world` works.
Words alone are pronounced: a word CMUdict has gets every one of its pronunciations (source
`dictionary`), any other word the model's (source `predicted`): the shipped model, or the one in
--checkpoint (a training checkpoint or an export; repeated, an ensemble). `-` reads words from standard input and
--file FILE from a file, one word per line. The output is TSV, one line per pronunciation:

    word<TAB>source<TAB>pronunciation          hello	dictionary	HH AH L OW

`--text` reads running text through the front end (numbers, acronyms, split words, punctuation
as boundaries; tfmr/tasks/g2p_text.py), one line per spoken word with a fourth column, the note,
or one line per line of text with --join. The work is tfmr.g2p's (the same as the Python call and
`tfmr g2p serve`); this file reads the input in bounded batches and prints each batch as soon as
it is pronounced (Ctrl-C keeps what was pronounced, exit 130). A prediction that fails the
long-word checks is `low-confidence`, exit status 1.

A word with characters outside a-z and ' (digits, punctuation, other scripts) is not guessed
(unless the model's alphabet has them): its line reads `word<TAB>unreadable<TAB>` (empty
pronunciation), a note on standard error says why, and the exit status is 1. When a word needs a
model and there is none (no model shipped, no --checkpoint), the words that could be pronounced
are printed first, then one line `tfmr: error: ...` says how to get a model, exit status 2.

`train` resolves its config like every command (preset, or with --resume the run's saved
config, then --config, then each --set), trains, then reports test WER / PER greedy and with
the preset's beam, and the fresh model beside the shipped one; `eval` reports on a split;
`export` writes the fp16 form a model is shipped in; `finetune` fine-tunes a model (--checkpoint,
or the shipped one) with an RL objective on a metric, and prints test WER / PER before and after.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..config import ConfigError
from ..g2p import G2P, LOW_CONFIDENCE, PROBLEMS, UNREADABLE, joined, tsv_lines
from ..presets import names
from ..programs import shows_progress
from ..tasks.g2p_presets import G2PConfig
from ..tasks.phonemes import FORMATS
from ..tasks.symbols_common import (
    FINETUNE_DEFAULTS,
    FINETUNE_RECORD,
    FINETUNE_SAMPLES,
    RL_OBJECTIVES,
    SPLITS,
)
from .common import USER_ERRORS, config_flags

# Everything above needs no torch, so the parser and a dictionary look-up (`tfmr g2p hello`) load
# none; the verbs that train, evaluate or export import the task (tfmr.tasks.g2p) when they run.

VERBS = (
    "pronounce",
    "train",
    "eval",
    "export",
    "finetune",
    "serve",
)  # cli/spellings.py tells words from these


def add_parser(sub) -> None:
    """The `tfmr g2p` noun and its verbs, each with its own flags."""
    from . import serve

    p = sub.add_parser(
        "g2p",
        help="grapheme-to-phoneme on CMUdict: pronounce words | train | eval | export | "
        "finetune | serve",
        description="tfmr g2p WORD ... (or - for standard input; the same as tfmr g2p pronounce "
        "WORD ...) | tfmr g2p VERB [flags]; tfmr g2p VERB --help gives its flags. Words "
        "print as TSV: word<TAB>source<TAB>pronunciation, source dictionary | predicted | "
        "unreadable.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in (
        _pronounce,
        _train,
        _eval,
        _export,
        _finetune,
        serve.add_parser,
    ):  # in the order of VERBS
        add(verbs)


ONE_MODEL = "the model to use instead of the shipped one (a training checkpoint RUN/checkpoint or an export)"
ENSEMBLE = ONE_MODEL[:-1] + "; repeat it for an ensemble of models with one vocabulary)"


def _checkpoint_flag(p, what: str = ONE_MODEL, many: bool = False, **kw) -> None:
    """--checkpoint; `many`: repeatable, a list of models read as one ensemble."""
    p.add_argument("--checkpoint", help=what, action="append" if many else "store", **kw)


def _beams_flag(p) -> None:
    p.add_argument(
        "--beam",
        type=int,
        action="append",
        help="beam size (1 = greedy), repeatable (default 1 and the model's decode.beam_size)",
    )


def _limit_flag(p) -> None:
    p.add_argument(
        "--limit", type=int, help="only the first N words of the split (md5 order; default all)"
    )


def _pronounce(verbs) -> None:
    p = verbs.add_parser(
        "pronounce",
        help="words (or running text) -> phonemes; the default verb",
        description="Pronounce words: CMUdict's pronunciations, the model's for other words.",
    )
    p.add_argument(
        "words",
        nargs="*",
        metavar="WORD",
        help="words to pronounce (- reads them from standard input)",
    )
    _checkpoint_flag(p, ENSEMBLE, many=True)
    p.add_argument(
        "--model-only",
        action="store_true",
        help="pronounce every word with the model, also those CMUdict has",
    )
    p.add_argument(
        "--file", metavar="FILE", help="read words from FILE, one per line (- for standard input)"
    )
    p.add_argument(
        "--text",
        metavar="TEXT",
        help="pronounce running text (- reads it from standard input): "
        "numbers, acronyms, hyphenated and camel-case words, punctuation as boundaries; one line per "
        "spoken word with a fourth column, the note",
    )
    p.add_argument("--format", choices=FORMATS, default="arpabet", help="the phoneme alphabet")
    p.add_argument(
        "--stress",
        action="store_true",
        help="keep stress (ARPAbet digits 0 1 2, IPA marks); "
        "dictionary words keep CMUdict's, predicted ones the model's when it predicts stress",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="--text: every dictionary variant of each word (default: "
        "the one the homograph rules or the dictionary's order pick)",
    )
    p.add_argument(
        "--join", action="store_true", help="--text: one line of phonemes per line of text"
    )
    p.add_argument(
        "--beam",
        type=int,
        help="beam size for predicted words (1 = greedy; default the model's decode.beam_size)",
    )
    # read only to say what to use instead: they configure training, not pronouncing
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.set_defaults(
        func=run_predict, intermixed="words"
    )  # words may follow options: g2p hello --beam 1 world


def _train(verbs) -> None:
    p = verbs.add_parser(
        "train",
        help="train a G2P model, then report test WER / PER",
        description="Train a G2P model (preset, or with --resume the run's saved config, then "
        "--config, then each --set), then report test WER / PER.",
    )
    config_flags(
        p,
        preset="g2p-small",
        data=False,
        preset_help=f"one of {', '.join(names(G2PConfig))} (default g2p-small; with --resume the run's "
        "saved config is used)",
    )
    p.add_argument("--out", default="runs/g2p", help="run folder (checkpoint, metrics, heatmaps)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument(
        "--overwrite", action="store_true", help="start over in an --out that holds a run"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the whole resolved config at start (default: a short summary)",
    )
    _beams_flag(p)
    p.set_defaults(func=run_train)


def _eval(verbs) -> None:
    p = verbs.add_parser(
        "eval",
        help="WER / PER of a model on a split, greedy and with beams",
        description="WER / PER of a model (--checkpoint, or the shipped one) on a split.",
    )
    _checkpoint_flag(p, ENSEMBLE, many=True)
    p.add_argument("--split", default="test", choices=SPLITS, help="which split")
    _beams_flag(p)
    _limit_flag(p)
    p.add_argument(
        "--out",
        default="runs/g2p-eval",
        help="where the heatmaps go (not runs/g2p: that is `train`'s run folder, which a folder "
        "of heatmaps would block)",
    )
    p.set_defaults(func=run_eval)


def _export(verbs) -> None:
    p = verbs.add_parser(
        "export",
        help="the fp16 inference copy a model is shipped in",
        description="Write the fp16 form a model is shipped in, with a sha256 manifest.",
    )
    _checkpoint_flag(
        p,
        "the checkpoint to export (RUN/checkpoint); repeat it to export an ensemble of models "
        "with one vocabulary, which tfmr g2p then decodes as one",
        many=True,
        required=True,
    )
    p.add_argument(
        "--out", required=True, help="the folder to write (tfmr/tasks/g2p_model ships it with tfmr)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.set_defaults(func=run_export)


def _finetune(verbs) -> None:
    p = verbs.add_parser(
        "finetune",
        help="fine-tune a model with an RL objective on a metric",
        description="Fine-tune a model (--checkpoint, or the shipped one) with an RL objective "
        "on a metric; test WER / PER before and after.",
    )
    _checkpoint_flag(p)
    p.add_argument(
        "--objective",
        default="scst",
        help=f"{' | '.join(RL_OBJECTIVES)} (train.objective "
        f"{', '.join(f'{k} = {v}' for k, v in RL_OBJECTIVES.items())}). Fine-tuning starts "
        f"from the model's own config with {' '.join(FINETUNE_DEFAULTS)}, samples per word "
        f"{FINETUNE_SAMPLES}; --set changes any of them",
    )
    p.add_argument(
        "--reward",
        default="exact",
        help="per (1 - PER) | exact (exact match) | bleu (sentence BLEU on phonemes)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the model's own config, e.g. --set train.steps=200 (repeatable)",
    )
    p.add_argument("--out", required=True, help="the fine-tuning run folder")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument(
        "--overwrite", action="store_true", help="start over in an --out that holds a run"
    )
    _limit_flag(p)
    _beams_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_finetune)


def _check_counts(args) -> None:
    """--beam and --limit are counts from 1 (one line, exit 2, before any work)."""
    beams = (
        args.beam if isinstance(args.beam, list) else [args.beam] if args.beam is not None else []
    )
    for beam in beams:
        if beam < 1:
            raise ConfigError(f"--beam must be at least 1 (1 = greedy), got {beam}")
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1 (a number of words), got {args.limit}")


def run_train(args) -> int:
    from ..tasks import g2p

    _check_counts(args)
    return g2p.TASK.train_command(args)


def run_eval(args) -> int:
    from ..tasks import g2p

    _check_counts(args)
    return g2p.TASK.eval_command(args)


def run_finetune(args) -> int:
    from ..tasks import g2p

    _check_counts(args)
    g2p.finetune_overrides(args.objective, args.reward)  # unknown names: one line, before any work
    if args.resume and args.checkpoint:
        raise ConfigError(
            "g2p finetune --resume continues the run in --out; it takes no --checkpoint"
        )
    record = g2p.finetune(
        args.checkpoint,
        args.objective,
        args.reward,
        args.out,
        args.set,
        resume=args.resume,
        overwrite=args.overwrite,
        limit=args.limit,
        beams=args.beam,
        progress=not args.no_progress,
    )
    print(
        f"{record['objective']} on {record['reward']}, {record['steps']} steps from {record['source']}"
    )
    print(g2p.side_by_side(record))
    best = record.get("best")
    if best:
        print(
            f"after: the weights of step {best['step']}, the lowest {best['metric']} ({best['value']:.4f}), "
            f"in {Path(args.out) / 'best'}"
        )
    print(
        f"checkpoint: {Path(args.out) / 'checkpoint'}; results: {Path(args.out) / FINETUNE_RECORD}"
    )
    return 0


def run_export(args) -> int:
    from ..tasks import g2p

    return g2p.TASK.export_command(args)


BATCH_WORDS, BATCH_LINES = (
    256,
    64,
)  # read, pronounce and print this many at a time: memory stays flat


def _stdin_lines() -> Iterator[str]:
    """Standard input line by line, as it comes; bytes that are not UTF-8 become U+FFFD (the word
    that holds them is then unreadable, never a crash)."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream put in place of stdin (tests)
        yield from (line.rstrip("\r\n") for line in sys.stdin)
        return
    for raw in stream:
        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _file_lines(path: str) -> Iterator[str]:
    if path == "-":
        yield from _stdin_lines()
        return
    with open(path, "rb") as f:  # FileNotFoundError here is one line (USER_ERRORS)
        for raw in f:
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def iter_words(args_words: Sequence[str], file: str | None) -> Iterator[str]:
    """The words of the command line, with `-` replaced by the lines of standard input, then
    those of --file FILE (`-`: standard input); blank lines skipped, each line stripped."""
    for item in args_words:
        yield from (_stripped(_stdin_lines()) if item == "-" else [item])
    if file:
        yield from _stripped(_file_lines(file))


def _stripped(lines: Iterable[str]) -> Iterator[str]:
    return (line.strip() for line in lines if line.strip())


def read_words(args_words: Sequence[str], file: str | None) -> tuple[list[str], bool]:
    """All the words at once (see iter_words), and whether any were asked for at all."""
    return list(iter_words(args_words, file)), bool(args_words) or bool(file)


def _batches(items: Iterable[str], size: int, first: int = 16) -> Iterator[list[str]]:
    """Batches of `items` that double from `first` up to `size`: the first lines are out before
    a later word's prediction has to load torch and the model (about 2.5 s on 2 cores)."""
    batch: list[str] = []
    limit = min(first, size)
    for item in items:
        batch.append(item)
        if len(batch) >= limit:
            yield batch
            batch, limit = [], min(2 * limit, size)
    if batch:
        yield batch


class _Progress:
    """A line on standard error, rewritten after each batch: how many words (or lines) are done,
    of how many when the input is known ahead (words on the command line, --file FILE), the rate
    and the time left. Shown when standard error is a terminal (TFMR_PROGRESS=1 forces it, 0 hides
    it: programs.shows_progress); the line is cleared at the end."""

    def __init__(self, what: str, total: int | None = None):
        self.what, self.total, self.done, self.shown = what, total, 0, False
        self.t0, self.on = time.perf_counter(), shows_progress()

    def start(self) -> None:
        """Say that work began (loading the model and the first batch take a few seconds)."""
        if self.on and self.total and self.total > BATCH_WORDS:
            self._show(f"0 of {self.total:,} {self.what} done")

    def step(self, n: int) -> None:
        self.done += n
        if self.on:
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            if self.total:
                left = max(self.total - self.done, 0) / max(rate, 1e-9)
                self._show(
                    f"{self.done:,} of {self.total:,} {self.what} done ({rate:,.0f}/s, "
                    f"about {left:,.0f} s left)"
                )
            else:
                self._show(f"{self.done:,} {self.what} done ({rate:,.0f}/s)")

    def _show(self, text: str) -> None:
        print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)
        self.shown = True

    def close(self) -> None:
        if self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def _count_words(args_words: Sequence[str], file: str | None) -> int | None:
    """How many words iter_words will give, when that is known without reading standard input."""
    if "-" in args_words or file == "-":
        return None
    n = len(args_words)
    if file:
        try:
            n += sum(1 for line in _file_lines(file) if line.strip())
        except OSError:
            return None  # iter_words says what is wrong, in one line
    return n


def run_predict(args) -> int:
    _check_counts(args)
    text, rest = args.text, args.words
    if text is None and not rest and not args.file:
        raise ConfigError(
            "give one or more words to pronounce, - to read them from standard input, --file FILE, "
            "or --text TEXT"
        )
    if args.set or args.config:
        raise ConfigError(
            "pronouncing reads no --set or --config (they configure training); use --stress to keep "
            "stress, --beam K for the beam, --checkpoint DIR for another model"
        )
    if args.join and text is None:
        raise ConfigError(
            "--join writes one line per line of text: use it with --text TEXT (or --text -)"
        )
    if text is not None and (rest or args.file):
        raise ConfigError(
            "--text takes the text (or - for standard input); give no words or --file beside it"
        )
    engine = G2P(args.checkpoint, args.beam, args.model_only)
    if args.checkpoint:
        engine.model()  # now: a wrong --checkpoint fails before any output
    if text is None:
        batches = _batches(iter_words(rest, args.file), BATCH_WORDS)
        progress = _Progress("words", _count_words(rest, args.file))
    else:
        lines = _stdin_lines() if text == "-" else iter(text.splitlines() or [""])
        batches, progress = _batches(lines, BATCH_LINES), _Progress("lines")
    return _pronounce_stream(engine, batches, args, text is not None, progress)


def _pronounce_stream(
    engine: G2P, batches: Iterable[list[str]], args, is_text: bool, progress: _Progress
) -> int:
    """Pronounce and print batch by batch; 1 when a word was unreadable or low-confidence. On
    Ctrl-C the words of the batch that were already pronounced are printed, then exit 130."""
    status, first_line = 0, 0
    all_variants = args.all or not is_text
    progress.start()
    try:
        for batch in batches:
            entries = engine.plan_text(batch, first_line) if is_text else engine.plan_words(batch)
            first_line += len(batch)
            engine.lookup(entries, all_variants)
            try:
                engine.fill(entries)
            except (KeyboardInterrupt, *USER_ERRORS):
                done = (e for e in entries if e.source != "pending")
                _emit(engine.finish(done, args.format, args.stress), args, is_text, partial=True)
                raise
            status = max(
                status, _emit(engine.finish(entries, args.format, args.stress), args, is_text)
            )
            progress.step(len(batch))
    except KeyboardInterrupt:
        progress.close()
        print(
            "tfmr: interrupted: the words printed above are pronounced; the rest are not",
            file=sys.stderr,
        )
        return 130
    progress.close()
    return status


def _emit(words: list, args, is_text: bool, partial: bool = False) -> int:
    """Print one batch; 1 when some word was unreadable or low-confidence."""
    if is_text and args.join and not partial:
        by_line: dict[int, list] = {}
        for w in words:
            by_line.setdefault(w.line, []).append(w)
        for line in sorted(by_line):
            print(joined(by_line[line], args.format))
    else:
        lines = tsv_lines(words, notes=is_text)
        if lines:
            print("\n".join(lines))
    for w in words:
        if w.source == UNREADABLE:
            print(f"note: cannot pronounce {w.word!r}: {w.note}", file=sys.stderr)
        elif w.source == LOW_CONFIDENCE:
            print(f"note: low confidence in {w.word!r}: {w.note}", file=sys.stderr)
    sys.stdout.flush()
    return 1 if any(w.source in PROBLEMS for w in words) else 0
