"""A new symbol-to-symbol task written in this file alone: a word of a made-up alphabet in, its
letters backwards out. The task layer (tfmr/tasks/symbols.py) trains it, evaluates it, exports it
and runs its command; its preset joins the registry; tfmr.load reads what it wrote."""

from __future__ import annotations

import dataclasses
import random
import re

import pytest
import torch

from tfmr import load, presets
from tfmr.builder import build_model
from tfmr.cli import main
from tfmr.config import Choice, ModelConfig
from tfmr.seq2seq import DecodeConfig, Seq2SeqConfig, Seq2SeqTrainConfig
from tfmr.tasks.symbols import PairData, SymbolTask, register, split_by_source

ALPHABET = "qwrtzpsd"  # the made-up script


@dataclasses.dataclass
class ReverseConfig(Seq2SeqConfig):
    """A reversing run: the sections every pair task has, nothing of its own."""


def reverse_tiny() -> ReverseConfig:
    """Seconds-long reversing runs."""
    model = ModelConfig(
        arch="encoder-decoder",
        dim=48,
        layers=1,
        encoder_layers=1,
        heads=2,
        context=8,
        pos=Choice("learned"),
        dropout=0.0,
    )
    train = Seq2SeqTrainConfig(
        steps=400,
        batch_size=32,
        lr=5e-3,
        min_lr=5e-4,
        warmup=10,
        eval_every=400,
        log_every=100,
        checkpoint_every=400,
        eval_pairs=64,
        dtype="float32",
        threads=0,
    )
    return ReverseConfig(model, train, DecodeConfig(beam_size=2, max_len=8, batch_size=64))


class ReverseTask(SymbolTask):
    name, title = "reverse", "word-reversing"
    config_class = ReverseConfig
    presets = {"reverse-tiny": ("reverse", reverse_tiny)}
    default_preset = "reverse-tiny"
    items, source_units, target_units = "words", "letters", "letters"

    def load_data(self, cfg) -> PairData:
        rng = random.Random(0)
        words = sorted({"".join(rng.choices(ALPHABET, k=rng.randint(2, 5))) for _ in range(3000)})
        return PairData.build(split_by_source({w: [tuple(reversed(w))] for w in words}))


TASK = ReverseTask()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The task registered (in copies of the registries, for this module only) and trained
    through its own command line with its default preset."""
    root = tmp_path_factory.mktemp("reverse")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(presets, "PRESETS", dict(presets.PRESETS))
        mp.setattr(presets, "KINDS", dict(presets.KINDS))
        register(TASK)
        assert (
            TASK.command_line(["train", "--out", str(root / "run"), "--no-progress", "--no-eval"])
            == 0
        )
        yield root


def cli(capsys, *argv) -> tuple[int, list[str], list[str]]:
    code = TASK.command_line([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_its_preset_is_listed_and_its_checkpoints_named(run, capsys):
    assert main(["presets"]) == 0
    assert re.search(
        r"^reverse-tiny\s+tfmr reverse\s+Seconds-long reversing runs", capsys.readouterr().out, re.M
    )
    code, _, err = cli(capsys, "train", "--preset", "g2p-tiny", "--out", run / "other")
    assert code == 2 and err == [
        "tfmr: error: preset 'g2p-tiny' is a G2PConfig for `tfmr g2p`; valid presets "
        "here: reverse-tiny"
    ]
    assert main(["lm", "generate", "--checkpoint", str(run / "run" / "checkpoint")]) == 2
    err = (
        capsys.readouterr().err
    )  # the copy task's config has the same sections: a checkpoint reads as either
    assert (
        "is a copy-task or word-reversing checkpoint (tfmr experiment copytask; tfmr reverse); this command "
        "reads language-model checkpoints" in err
    )


def test_training_taught_it_to_reverse(run):
    model, vocab, cfg = TASK.load_model(run / "run" / "checkpoint")
    assert isinstance(cfg, ReverseConfig) and cfg.train.steps == 400
    data = dataclasses.replace(TASK.load_data(cfg), vocab=vocab)
    torch.manual_seed(0)
    untrained = build_model(cfg.model).eval()
    before, after = (
        TASK.evaluate(m, data, "dev", max_len=cfg.decode.max_len) for m in (untrained, model)
    )
    assert before["words"] == after["words"] == len(data.splits["dev"]) > 50
    assert after["per"] < 0.5 * before["per"] and after["wer"] < before["wer"]


def test_eval_prints_what_evaluate_measures(run, capsys):
    ckpt = run / "run" / "checkpoint"
    code, out, _ = cli(capsys, "eval", "--checkpoint", ckpt, "--beam", "1", "--limit", "40")
    model, vocab, cfg = TASK.load_model(ckpt)
    r = TASK.evaluate(
        model,
        dataclasses.replace(TASK.load_data(cfg), vocab=vocab),
        "test",
        1,
        cfg.decode.max_len,
        limit=40,
    )
    assert code == 0 and out[0].startswith(
        f"test (40 words), greedy : WER {100 * r['wer']:.2f}%  PER {100 * r['per']:.2f}%"
    )
    assert out[1] == "examples from the test split:" and len(out) == 2 + 12


def test_export_writes_an_fp16_copy_that_decodes_alike(run, capsys):
    ckpt, export = run / "run" / "checkpoint", run / "export"
    code, out, err = cli(capsys, "export", "--checkpoint", ckpt, "--out", export)
    assert code == 0, err
    original, exported = load(ckpt, ReverseConfig), load(export, ReverseConfig)
    assert (original.kind, exported.kind) == (
        "checkpoint",
        "export",
    ) and original.config == exported.config
    assert next(exported.model.parameters()).dtype == torch.float32  # fp16 on disk, fp32 in memory
    words = sorted(TASK.load_data(original.config).splits["dev"])[:500]
    same = TASK.agreement(original.model, original.vocab, exported.model, exported.vocab, words)
    assert (
        out[-1]
        == f"check: {100 * same:.1f}% of {len(words)} dev words are decoded as the fp32 checkpoint does (greedy)"
    )
    assert same >= 0.95
    assert (
        cli(capsys, "export", "--checkpoint", ckpt, "--out", export)[0] == 2
    )  # written once, not over


def test_predict_prints_tsv_and_refuses_what_the_model_cannot_read(run, capsys):
    ckpt = run / "run" / "checkpoint"
    code, out, _ = cli(capsys, "predict", "--checkpoint", ckpt, "--beam", "1", "qwr", "sdpz")
    model, vocab, cfg = TASK.load_model(ckpt)
    expected = TASK.predict(model, vocab, ["qwr", "sdpz"], 1, cfg.decode.max_len)
    assert code == 0 and out == [f"qwr\t{' '.join(expected[0])}", f"sdpz\t{' '.join(expected[1])}"]
    for word, message in (
        ("qwa", "'qwa' has 'a', not in the model's letters (8 of them)"),
        ("q" * 9, "has 9 letters; this model reads at most 8"),
    ):
        code, out, err = cli(capsys, "predict", "--checkpoint", ckpt, word)
        assert code == 2 and out == [] and len(err) == 1 and message in err[0]
    code, _, err = cli(capsys, "predict", "qwr")
    assert code == 2 and err == [
        "tfmr: error: give --checkpoint DIR: a checkpoint or an export of `tfmr reverse train`"
    ]


def test_the_loader_reads_the_run_folder_as_its_checkpoint(run):
    whole, ckpt = load(run / "run"), load(run / "run" / "checkpoint")
    assert (whole.kind, whole.path) == ("run", ckpt.path)
    assert (
        type(whole.config) is Seq2SeqConfig
    )  # no task is named in a checkpoint; three configs read it
    a, b = whole.model.state_dict(), ckpt.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
