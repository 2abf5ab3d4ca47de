"""English pronunciations from Python: the public G2P call behind `tfmr g2p` and `tfmr g2p serve`.

    from tfmr.g2p import pronounce
    pronounce("Mr. Smith paid $3.50", format="ipa", stress=True)  # -> list[Word]
    pronounce(["record", "blorftastic"])                            # words as they are, every variant

    Word                 one spoken word (or a punctuation boundary): the text it came from, its
                         kind, its source (dictionary | composed | spelled | predicted | low-confidence |
                         unreadable | boundary), its pronunciations as printed, the ARPAbet
                         symbols, and a note (which homograph reading, what was repaired, ...)
    G2P(checkpoint=None) the engine: CMUdict with stress, the text front end, the homograph rules and
                         the model (the shipped one unless a checkpoint is given; a list of
                         checkpoints is an ensemble, tfmr/ensemble.py), loaded once, on the first
                         word that needs it
    pronounce(...)       G2P's call on a process-wide engine per checkpoint
    tsv_lines(words)     the lines `tfmr g2p` prints; joined(words) the `--join` line

A string is text: it goes through the front end (tfmr/tasks/g2p_text.py), homographs are chosen
from the word before (tfmr/tasks/homographs.py) and each word gets one pronunciation unless
`all`. A list holds words taken as they are (no splitting, no numbers), each with every
dictionary variant unless `all=False`. A possessive of a dictionary word is said from its entry
(tfmr/tasks/possessive.py); predictions are checked (tfmr/tasks/g2p_checks.py): a word that
still looks wrong after the repairs is `low-confidence`, and one that is a regular form of a
dictionary word (-s, -ed, -ing, -ness) is composed from its entry where the model finds the
composition about as likely as its own output (tfmr/tasks/inflection.py). The library modules do the
work; this file puts them together for the command line, the server and Python callers alike.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import ConfigError
from .tasks.g2p_lexicon import LETTERS, TRAIN_HINT, Lexicon, NoShippedModel
from .tasks.g2p_text import ACRONYM, BOUNDARY, WORD, Token, acronym_phones, tokenize
from .tasks.homographs import choose
from .tasks.inflection import choose as choose_inflection
from .tasks.inflection import describe as describe_inflection
from .tasks.phonemes import FORMATS, format_phones, strip_stress
from .tasks.possessive import possessive
from .tasks.symbols_common import escape

# The model's side (tfmr.tasks.g2p, tasks/g2p_checks.py, the builder) imports torch: it is imported
# on the first word the dictionary does not have, so a look-up such as `tfmr g2p hello` needs none.

DICTIONARY, SPELLED, PREDICTED, LOW_CONFIDENCE = (
    "dictionary",
    "spelled",
    "predicted",
    "low-confidence",
)
COMPOSED = "composed"  # a possessive or an inflected form of a dictionary word, from its entry
# (tasks/possessive.py, tasks/inflection.py)
UNREADABLE, BOUNDARY_SOURCE = "unreadable", "boundary"
PROBLEMS = (UNREADABLE, LOW_CONFIDENCE)  # the sources that make `tfmr g2p` exit with status 1
_PENDING = "pending"


@dataclass(frozen=True)
class Word:
    """One spoken word of the input, or one boundary (punctuation, nothing spoken)."""

    word: str  # as given (a word of the text keeps its case; a spelled-out number is lower case)
    source: (
        str  # dictionary | composed | spelled | predicted | low-confidence | unreadable | boundary
    )
    pronunciations: tuple[str, ...]  # as printed: ARPAbet separated by spaces, or IPA
    phones: tuple[tuple[str, ...], ...]  # the ARPAbet symbols of each (stress digits where kept)
    kind: str = WORD  # word | number | abbreviation | acronym | boundary (tfmr/tasks/g2p_text.py)
    token: str = ""  # the text it came from ($3.50 for "dollars"); the word itself when the same
    note: str = ""  # why unreadable / low-confidence, which homograph reading, what was repaired
    line: int = 0  # which input line (a text) it came from

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Entry:
    word: str
    kind: str = WORD
    token: str = ""
    line: int = 0
    previous: str | None = None  # the word before in the same sentence (homograph rules)
    source: str = _PENDING
    variants: list = field(
        default_factory=list
    )  # ARPAbet tuples, stress digits as the source gives them
    note: str = ""


class G2P:
    """The pronouncing engine. `checkpoint`: a training checkpoint or an export (None: the model
    shipped with tfmr), several of them (an ensemble: one vocabulary, the first one's decode
    settings), or `loaded`: a (model, vocab, cfg) already in memory; `beam`: the beam for
    predicted words (None: the model's); `model_only`: send every readable word to the model;
    `lexicon`: {word: [pronunciation, ...]} instead of CMUdict (a benchmark gives it the train
    split, so that held-out words go through the model and the rules as unknown words do)."""

    def __init__(
        self,
        checkpoint: str | Path | Sequence[str | Path] | None = None,
        beam: int | None = None,
        model_only: bool = False,
        loaded: tuple | None = None,
        lexicon: Mapping | None = None,
    ):
        if beam is not None and beam < 1:
            raise ConfigError(f"--beam must be at least 1 (1 = greedy), got {beam}")
        self.checkpoint, self.beam, self.model_only, self.loaded = (
            checkpoint,
            beam,
            model_only,
            loaded,
        )
        # CMUdict's first words come without parsing the whole file
        self.lexicon = Lexicon(stress=True) if lexicon is None else lexicon
        self.model_stress: bool | None = (
            None  # whether the model predicts stress (its cfg.data.stress), once loaded
        )

    def model(self):
        """(model, vocab, cfg): `loaded` when given (a model already in memory, as a benchmark
        converts it), else loaded once per process (NoShippedModel when there is none)."""
        if self.loaded is not None:
            return self.loaded
        if isinstance(self.checkpoint, (list, tuple)):  # --checkpoint repeated: an ensemble
            paths = tuple(str(Path(c).resolve()) for c in self.checkpoint)
            return _load_ensemble(paths) if len(paths) > 1 else _load_checkpoint(paths[0])
        if self.checkpoint is not None:
            return _load_checkpoint(str(Path(self.checkpoint).resolve()))
        from .tasks import g2p as task

        return _load_checkpoint(str(task.TASK.default_checkpoint().resolve()))  # NoShippedModel

    def known(self, word: str) -> bool:
        return word in self.lexicon

    # ------------------------------------------------------------------ planning
    def plan_words(self, words: Sequence[str]) -> list[_Entry]:
        return [_Entry(w, token=w) for w in words]

    def plan_text(self, lines: Sequence[str], first_line: int = 0) -> list[_Entry]:
        """One entry per spoken word or boundary of each line (the front end's tokens)."""
        out: list[_Entry] = []
        for n, line in enumerate(lines, first_line):
            previous = None
            for token in tokenize(line, self.known):
                out.extend(self._token_entries(token, n, previous))
                previous = None if token.kind == BOUNDARY else token.words[-1]
        return out

    def _token_entries(self, token: Token, line: int, previous: str | None) -> list[_Entry]:
        if token.kind == BOUNDARY:
            return [_Entry(token.source, BOUNDARY, token.source, line, source=BOUNDARY_SOURCE)]
        entries = []
        for w in token.words:
            entries.append(_Entry(w, token.kind, token.source, line, previous))
            previous = w
        return entries

    # ------------------------------------------------------------------ pronouncing
    def lookup(self, entries: list[_Entry], all_variants: bool) -> list[_Entry]:
        """The dictionary's part (and acronyms, read letter by letter); the rest stays pending."""
        for e in entries:
            if e.source != _PENDING:
                continue
            if e.kind == ACRONYM and not self.model_only:
                e.source, e.variants, e.note = (
                    SPELLED,
                    [acronym_phones(e.word)],
                    "read letter by letter",
                )
                continue
            found = None if self.model_only else self.lexicon.get(e.word.lower())
            source = DICTIONARY
            if not found and not self.model_only:
                found, source = possessive(e.word.lower(), self.lexicon), COMPOSED
            if not found:
                continue
            e.source, e.variants = source, list(found)
            if source == COMPOSED:
                w = e.word.lower()
                e.note = f"the possessive of {w[:-2] if w.endswith(chr(39) + 's') else w[:-1]!r}, from its entry"
            if not all_variants and len(found) > 1:
                index, e.note = choose(found, e.previous)
                e.variants = [found[index]]
        return entries

    def fill(self, entries: list[_Entry]) -> list[_Entry]:
        """The model's part: pending words it can read are predicted and checked; the others are
        unreadable. Without a model the unreadable ones are marked, then NoShippedModel is raised."""
        pending = [e for e in entries if e.source == _PENDING]
        if not pending:
            return entries
        try:
            triple = self.model()
        except NoShippedModel:
            triple = None
        letters, max_letters = LETTERS, None
        if triple is not None:
            from .builder import max_positions

            model, vocab, cfg = triple
            self.model_stress = bool(cfg.data.stress)
            letters = LETTERS | set(vocab.src.itos[4:])
            max_letters = cfg.model.context if max_positions(cfg.model) is not None else None
        for e in pending:
            note = why_unreadable(e.word.lower(), letters, max_letters)
            if note:
                e.source, e.note = UNREADABLE, note
        left = [e for e in pending if e.source == _PENDING]
        if left and triple is None:
            n = len(left)
            raise NoShippedModel(
                f"{n} word{'s' if n > 1 else ''} ({_some(e.word for e in left)}) "
                f"{'are' if n > 1 else 'is'} not in CMUdict and no G2P model is shipped in this "
                f"build of tfmr; {TRAIN_HINT}"
            )
        if left:
            self._predict(left, *triple)
        return entries

    def _predict(self, entries: list[_Entry], model, vocab, cfg) -> None:
        words = sorted({e.word.lower() for e in entries})
        beam = self.beam or cfg.decode.beam_size
        cap = min(cfg.decode.max_len, cfg.model.context - 1)
        checked = dict(
            zip(words, decode_checked(model, vocab, cfg, words, beam, self.lexicon, cap))
        )
        composed = {} if self.model_only else self._inflected(checked, model, vocab)
        for e in entries:
            w = e.word.lower()
            if w in composed:
                e.variants, e.source = [composed[w].phones], COMPOSED
                e.note = describe_inflection(composed[w])
                continue
            c = checked[w]
            e.variants = [c.phones]
            e.source = LOW_CONFIDENCE if c.problem else PREDICTED
            e.note = c.problem or (f"repaired: {c.repair}" if c.repair else "")

    def _inflected(self, checked: dict, model, vocab) -> dict:
        """{word: Candidate} for the predicted words better said as a regular form of a dictionary
        word (tasks/inflection.py): the model scores the candidates against its own output."""
        from .tasks.g2p_checks import scores

        def score(words, phones):
            phones = phones if self.model_stress else [strip_stress(p) for p in phones]
            return scores(model, vocab, words, phones)

        words = list(checked)
        own = [None if checked[w].problem else checked[w].score for w in words]
        return choose_inflection(words, own, self.lexicon, score)

    def finish(
        self, entries: Iterable[_Entry], format: str = "arpabet", stress: bool = False
    ) -> list[Word]:  # noqa: A002
        """Entries -> Words, pronunciations formatted (stress digits dropped unless `stress`)."""
        if format not in FORMATS:
            raise ConfigError(f"unknown format {format!r}; valid: {', '.join(FORMATS)}")
        return [self._word(e, format, stress) for e in entries]

    def _word(self, e: _Entry, format: str, stress: bool) -> Word:  # noqa: A002
        phones: list[tuple[str, ...]] = []
        for v in e.variants:
            v = tuple(v) if stress else strip_stress(v)
            if v not in phones:
                phones.append(v)
        note = e.note
        if stress and e.source in (PREDICTED, LOW_CONFIDENCE) and self.model_stress is False:
            note = "; ".join(
                filter(None, [note, "no stress digits: this model does not predict stress"])
            )
        return Word(
            e.word,
            e.source,
            tuple(format_phones(p, format, stress) for p in phones),
            tuple(phones),
            e.kind,
            e.token if e.token != e.word else "",
            note,
            e.line,
        )

    def __call__(
        self,
        words_or_text: str | Sequence[str],
        format: str = "arpabet",
        stress: bool = False,  # noqa: A002
        all: bool | None = None,
    ) -> list[Word]:  # noqa: A002
        """Pronounce a text (a str: the front end, one reading per word unless `all`) or a list of
        words (each as it is, every dictionary variant unless all=False)."""
        is_text = isinstance(words_or_text, str)
        if all is None:
            all = not is_text  # noqa: A001
        entries = (
            self.plan_text(words_or_text.splitlines() or [""])
            if is_text
            else self.plan_words(words_or_text)
        )
        return self.finish(self.fill(self.lookup(entries, all)), format, stress)


def decode_checked(*args, **kwargs):
    """tasks/g2p_checks.py's decode_checked (the model's words, checked and repaired), imported with
    torch on the first word the model reads."""
    from .tasks import g2p_checks

    return g2p_checks.decode_checked(*args, **kwargs)


@functools.lru_cache(maxsize=4)
def _load_checkpoint(path: str):
    from .tasks import g2p as task

    if Path(path) == task.SHIPPED.resolve():
        return task.load_shipped()
    return task.TASK.load_model(path)


@functools.lru_cache(maxsize=2)
def _load_ensemble(paths: tuple[str, ...]):
    """(Ensemble of the models at `paths`, the shared vocab, the first one's config); models whose
    vocabularies differ (letters, phonemes, stress or not) are refused in one line."""
    from .tasks.symbols import ensemble_of

    loaded = [_load_checkpoint(p) for p in paths]
    return ensemble_of(loaded, paths), loaded[0][1], loaded[0][2]


def why_unreadable(word: str, letters=LETTERS, max_letters: int | None = None) -> str | None:
    """Why the model cannot read `word` (lower case), or None when it can."""
    if not word:
        return "an empty word"
    if not word.strip("'"):
        return "it has no letters, only apostrophes"
    if "\ufffd" in word:
        return "it has bytes that are not UTF-8 (read as U+FFFD)"
    odd = sorted({c for c in word if c not in letters})
    if odd:
        which = ", ".join(repr(c) for c in odd)
        lacks = "a letter a-z or an apostrophe" if letters == LETTERS else "in the model's alphabet"
        return f"it has {which}, which {'is' if len(odd) == 1 else 'are'} not {lacks} (not guessed)"
    if max_letters is not None and len(word) > max_letters:
        return f"the model reads words of up to {max_letters} letters; this one has {len(word)}"
    return None


def _some(words, n: int = 3) -> str:
    words = list(words)
    return ", ".join(words[:n]) + (f" and {len(words) - n} more" if len(words) > n else "")


@functools.lru_cache(maxsize=4)
def engine(checkpoint: str | tuple[str, ...] | None = None, beam: int | None = None) -> G2P:
    """One G2P per (checkpoint, beam) per process: the model is loaded once."""
    return G2P(checkpoint, beam)


def pronounce(
    words_or_text: str | Sequence[str],
    format: str = "arpabet",
    stress: bool = False,  # noqa: A002
    all: bool | None = None,
    checkpoint: str | Sequence[str] | None = None,
    beam: int | None = None,
) -> list[Word]:  # noqa: A002
    """Pronounce a text (str) or a list of words; see the module docstring and docs/g2p.md.
    `checkpoint`: a model, or a list of models decoding as one ensemble."""
    key = tuple(checkpoint) if isinstance(checkpoint, list) else checkpoint
    return engine(key, beam)(words_or_text, format, stress, all)


# ---------------------------------------------------------------------------- printing
def tsv_lines(words: Iterable[Word], notes: bool = False) -> list[str]:
    """`word<TAB>source<TAB>pronunciation` per pronunciation (one line with an empty one when
    there is none); with `notes` (text input) a fourth column: the note, and the text the word
    came from when it differs."""
    out = []
    for w in words:
        extra = ""
        if notes:
            origin = (
                f"from {w.token!r} ({w.kind})"
                if w.token
                else (w.kind if w.kind not in (WORD, BOUNDARY) else "")
            )
            extra = "\t" + escape("; ".join(filter(None, [origin, w.note])))
        for p in w.pronunciations or ("",):
            out.append(f"{escape(w.word)}\t{w.source}\t{p}{extra}")
    return out


def joined(words: Iterable[Word], format: str = "arpabet") -> str:  # noqa: A002
    """One line for a line of text: each word's first pronunciation, an unreadable word as ?.
    IPA: words apart by spaces, punctuation kept in place (`həˈloʊ, ˈwɝld!`). ARPAbet, whose
    symbols are apart by spaces: words and punctuation apart by ' | '."""
    parts: list[str] = []
    for w in words:
        said = (
            w.word
            if w.source == BOUNDARY_SOURCE
            else (w.pronunciations[0] if w.pronunciations else "?")
        )
        if format == "ipa" and w.source == BOUNDARY_SOURCE and parts and w.word in _CLOSING:
            parts[-1] += said
        else:
            parts.append(said)
    return (" " if format == "ipa" else " | ").join(parts)


_CLOSING = frozenset(",.!?;:)]}")
