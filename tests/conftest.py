"""Shared test fixtures: small configs and a short text corpus."""
from __future__ import annotations

import pytest
import torch

from tfmr import presets

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Token caches of the tests (and of the CLI subprocesses they start) stay in a temp folder."""
    import os

    os.environ["TFMR_CACHE"] = str(tmp_path_factory.mktemp("tfmr-cache"))

SHORT_TEXT = ("To be, or not to be, that is the question:\n"
              "Whether 'tis nobler in the mind to suffer\n"
              "The slings and arrows of outrageous fortune,\n") * 3


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SHORT_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def tiny_cfg(text_file, tmp_path):
    cfg = presets.tiny()
    cfg.data.path = str(text_file)
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.eval_iters = 1
    return cfg
