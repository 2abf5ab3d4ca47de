"""tfmr.load: one loader for a run, a checkpoint, an export and a Hugging Face folder (the same
model from each), and one line naming what a folder holds when it is none of them."""

from __future__ import annotations

import pytest
import torch

from tfmr import Choice, ModelConfig, RunConfig, build_model, checkpoint, load
from tfmr.checkpoint import CheckpointError
from tfmr.cli import main
from tfmr.config import ConfigError, to_dict
from tfmr.interop.hf_export import to_hf_folder
from tfmr.seq2seq import PairVocab, Seq2SeqConfig, Vocab
from tfmr.tokenizers import BPE, CharTokenizer

TEXT = "One loader reads every folder a model is saved in. " * 8
WHERE = "not a complete checkpoint, an export, a run or a Hugging Face folder"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A GPT-2-shaped language model and its tokenizer, saved as a run, an fp32 export and a
    Hugging Face folder."""
    root = tmp_path_factory.mktemp("load")
    tok = BPE.train(TEXT, vocab_size=270)
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        dim=32,
        layers=2,
        heads=4,
        context=32,
        pos=Choice("learned"),
        ffn=Choice("mlp", activation="gelu_tanh"),
        bias=True,
        tie_embeddings=True,
    )
    model = build_model(cfg).eval()
    run_cfg = to_dict(RunConfig(model=cfg))
    checkpoint.save(root / "run" / "checkpoint", model, run_cfg, tok)
    checkpoint.export(root / "export", model, run_cfg, tok, dtype=torch.float32)
    to_hf_folder(model, tok, root / "hf")
    return root, model, tok


@pytest.mark.parametrize(
    "name, kind",
    [("run", "run"), ("run/checkpoint", "checkpoint"), ("export", "export"), ("hf", "hf")],
)
def test_every_kind_of_folder_gives_the_same_model_and_tokenizer(saved, name, kind):
    root, model, tok = saved
    loaded = load(root / name)
    assert loaded.kind == kind and not loaded.model.training
    assert loaded.path == (root / "run" / "checkpoint" if kind == "run" else root / name)
    assert loaded.config.model.dim == model.cfg.dim and isinstance(loaded.config, RunConfig)
    assert loaded.vocab.encode(TEXT[:40]) == tok.encode(TEXT[:40])
    ids = torch.randint(0, tok.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5
        )
    assert loaded.model_type == ("gpt2" if kind == "hf" else "")


def _folder(tmp_path, what: str):
    path = tmp_path / "x"
    if what == "a file":
        path.write_text("x")
    elif what != "nothing is there":
        path.mkdir()
    files = {
        "other files (notes.txt)": "notes.txt",
        "a run stopped before its first checkpoint": "metrics.jsonl",
        "ONNX graphs": "prefill.onnx",
        "a tokenizer (tokenizer.json)": "tokenizer.json",
    }
    if what in files:
        (path / files[what]).write_text("{}")
    return path


@pytest.mark.parametrize(
    "what",
    [
        "nothing is there",
        "a file",
        "an empty folder",
        "other files (notes.txt)",
        "a run stopped before its first checkpoint",
        "ONNX graphs",
        "a tokenizer (tokenizer.json)",
    ],
)
def test_a_folder_that_holds_no_model_is_one_line_naming_what_it_holds(tmp_path, capsys, what):
    path = _folder(tmp_path, what)
    with pytest.raises(CheckpointError) as e:
        load(path)
    assert str(e.value) == f"no checkpoint at {path}: {what}, {WHERE}"
    assert main(["lm", "generate", "--checkpoint", str(path)]) == 2
    assert capsys.readouterr().err == f"tfmr: error: {e.value}\n"


def test_a_run_is_read_as_its_checkpoint_unless_a_checkpoint_is_asked_for(saved):
    root, _, _ = saved
    with pytest.raises(
        CheckpointError, match=f"{root / 'run'} is a run folder; its checkpoint is "
    ):
        load(root / "run", runs=False)
    assert load(root / "run" / "checkpoint", runs=False).kind == "checkpoint"


def test_a_save_cut_short_reads_the_checkpoint_before_it(saved, tmp_path):
    root, model, _ = saved
    old = tmp_path / "checkpoint.old"  # the swap of a later save was cut between its two renames
    checkpoint.save(old, model, to_dict(RunConfig(model=model.cfg)), saved[2])
    loaded = load(tmp_path / "checkpoint")
    assert (loaded.kind, loaded.path) == ("checkpoint", old)


def test_another_commands_model_is_named_with_its_kind(saved, tmp_path):
    from tfmr.tasks.g2p import G2PConfig, g2p_tiny

    root, _, _ = saved
    with pytest.raises(
        CheckpointError, match="is a Hugging Face model folder; this command reads G2P checkpoints"
    ):
        load(root / "hf", G2PConfig)
    cfg = g2p_tiny()
    vocab = PairVocab(Vocab(list("abc")), Vocab(["AH", "B"]))
    cfg.model.arch, cfg.model.pad_id, cfg.model.src_vocab_size, cfg.model.vocab_size = (
        "encoder-decoder",
        0,
        7,
        6,
    )
    checkpoint.save(tmp_path / "g2p", build_model(cfg.model), to_dict(cfg), vocab)
    loaded = load(
        tmp_path / "g2p"
    )  # a pair checkpoint: its vocabularies, and the only config it reads as
    assert isinstance(loaded.vocab, PairVocab) and loaded.vocab.src.itos == vocab.src.itos
    assert isinstance(loaded.config, G2PConfig) and loaded.config == cfg
    cfg_dict = to_dict(cfg)
    del cfg_dict["data"]  # the sections every pair task has, and nothing that names the task
    checkpoint.save(tmp_path / "pairs", build_model(cfg.model), cfg_dict, vocab)
    pairs = load(tmp_path / "pairs").config
    assert isinstance(pairs, Seq2SeqConfig) and to_dict(pairs) == cfg_dict
    with pytest.raises(
        CheckpointError, match="is a G2P checkpoint .tfmr g2p.; this command reads language-model"
    ):
        load(tmp_path / "g2p", RunConfig)


def test_a_hugging_face_folder_without_a_tokenizer_is_one_line(tmp_path):
    model = build_model(
        ModelConfig(
            vocab_size=40,
            dim=16,
            layers=1,
            heads=2,
            context=16,
            pos=Choice("learned"),
            ffn=Choice("mlp", activation="gelu_tanh"),
            bias=True,
            tie_embeddings=True,
        )
    )
    wrote_tokenizer = to_hf_folder(model, CharTokenizer.train("abc"), tmp_path / "hf")[1]
    assert not wrote_tokenizer  # a character tokenizer has no tokenizer.json form
    with pytest.raises(ConfigError, match="no tokenizer.json beside the model"):
        load(tmp_path / "hf")
