"""Sequence-level knowledge distillation for G2P (Kim & Rush 2016): a student trains on a teacher's
pronunciations instead of the dictionary's.

    tfmr g2p train --preset g2p-small --set data.teacher=tfmr/tasks/g2p_model --out runs/student

`data.teacher` names a model tfmr.load reads (an export, an exported ensemble, a checkpoint). Before
the first step the teacher pronounces every train word with its own beam (`decode.beam_size`, or
`data.teacher_beam`: 1 is greedy, several times faster), and that one pronunciation is the word's
only target; dev and test keep the dictionary's, so dev WER and the test scores stay comparable
with any other run. The teacher must share the data's
vocabularies (trained with the same `data.stress`). Its outputs are written to RUN/teacher.json
(atomically) and read back by `--resume`, so a resumed run trains on the same targets; a fresh
run (or `--overwrite`) decodes them again. Why: a small student of a strong teacher (an ensemble)
can come close to it at a fraction of its decoding cost.

Word-level distillation (`train.word_distill=W`, with data.teacher) adds the teacher's
distribution at every position of each target: one teacher-forced pass over the train pairs
before the first step keeps its SOFT_TOPK most likely phonemes there and the probability it gives
the rest (seq2seq.teacher_distributions), and the student's loss becomes (1 - W) x its cross
entropy on the target + W x its cross entropy against that distribution. The pass is made again
on `--resume` (about a minute for the shipped model on 2 cores; the same numbers at the same
thread count), not stored: it would add about 20 MB to a run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..config import ConfigError
from ..folders import FolderError

TEACHER_FILE = "teacher.json"  # in a distilled run's folder: {"teacher": path, "targets": {...}}
# phonemes of the teacher kept at each position for word-level distillation. The shipped model puts
# 95.1% of its probability on its 8 most likely at the train pairs' positions (the run's log says
# it); the rest, mostly what its label smoothing (0.1) spread over all 69 phonemes, is kept as one
# number and spread evenly over the others (seq2seq.soft_cross_entropy)
SOFT_TOPK = 8


def teacher_pairs(task, data, cfg, out: Path, resume: bool, log=print) -> list:
    """(source ids, target ids) of every train word with the teacher's pronunciation as target."""
    targets = _read(out) if resume else None
    teacher = None  # loaded once, for whichever of its passes this run makes
    if targets is None:
        teacher = _teacher(task, data, cfg)
        targets = _decode(task, data, cfg, teacher)
        _write(out, cfg.data.teacher, targets)
        log(f"distillation: {len(targets):,} train words pronounced by {cfg.data.teacher}")
    src, tgt, train = data.vocab.src, data.vocab.tgt, data.splits["train"]
    # a word the teacher says nothing for keeps the dictionary's first pronunciation
    pairs = [(src.encode(w), tgt.encode(targets.get(w) or train[w][0])) for w in train]
    if cfg.train.word_distill <= 0:
        return pairs
    return _with_soft_targets(teacher or _teacher(task, data, cfg), pairs, cfg, log)


def _teacher(task, data, cfg) -> tuple:
    """(model, vocab, config) of data.teacher, refused in one line unless it has this run's symbols."""
    model, vocab, tcfg = task.load_model(cfg.data.teacher)
    if not data.vocab.same_symbols(vocab):
        raise ConfigError(
            f"data.teacher {cfg.data.teacher}: its letters or phonemes differ from this run's "
            f"data (data.stress={cfg.data.stress}); distil from a model trained on the same data"
        )
    return model, vocab, tcfg


def _with_soft_targets(teacher: tuple, pairs: list, cfg, log=print) -> list:
    """Each pair with the teacher's distributions along its target: (source, target, Soft)."""
    from ..programs import progress_bar
    from ..seq2seq import teacher_distributions

    model = teacher[0]
    t0 = time.perf_counter()
    with progress_bar(len(pairs), "teacher distributions", "pairs") as bar:
        softs, mass = teacher_distributions(model, pairs, SOFT_TOPK, done=bar.update)
    log(
        f"word-level distillation: the teacher's {SOFT_TOPK} most likely phonemes at each position "
        f"of {len(pairs):,} train pairs ({mass:.2%} of its probability), weight "
        f"{cfg.train.word_distill:g}; {time.perf_counter() - t0:.0f}s"
    )
    return [(s, t, soft) for (s, t), soft in zip(pairs, softs)]


def _decode(task, data, cfg, teacher: tuple | None = None) -> dict[str, list[str]]:
    """The teacher's beam output for each train word (words in the split's order); `teacher`: its
    (model, vocab, config) already loaded, else data.teacher is loaded and checked here."""
    model, vocab, tcfg = teacher or _teacher(task, data, cfg)
    words = list(data.splits["train"])
    if cfg.data.teacher_beam < 0:
        raise ConfigError(
            f"data.teacher_beam must be 0 (the teacher's) or more, got {cfg.data.teacher_beam}"
        )
    outputs = task.predict(
        model,
        vocab,
        words,
        cfg.data.teacher_beam or tcfg.decode.beam_size,
        tcfg.decode.max_len,
        tcfg.decode.batch_size,
        tcfg.decode.length_penalty,
        progress="teacher",
    )
    return dict(zip(words, outputs))


def _read(out: Path) -> dict | None:
    path = out / TEACHER_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["targets"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is corrupt; start the run again without --resume") from None


def _write(out: Path, teacher: str, targets: dict) -> None:
    """RUN/teacher.json, whole or not at all; a full disk or a read-only folder is one line."""
    tmp = out / f".{TEACHER_FILE}.tmp-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"teacher": teacher, "targets": targets}, ensure_ascii=False))
        os.replace(tmp, out / TEACHER_FILE)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FolderError(f"cannot write {out / TEACHER_FILE}: {e.strerror or e}") from None
