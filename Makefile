# tfmr: the two commands a new user needs are `make run` and `make test`.
# Both create .venv on first use and install tfmr (with a CPU build of torch) into it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# A CPU build of torch keeps the set-up small; override TORCH_SPEC for a GPU build.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.tfmr-installed

.PHONY: run lm test bench setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,fast,metrics,g2p,onnx]"
	touch $(STAMP)

setup: $(STAMP)

# The main job: grapheme-to-phoneme on CMUdict (docs/g2p.md): a fixed number of training steps (about
# 7 minutes on 2 quiet CPU cores; the same model however busy the machine), then test WER / PER with
# greedy and beam search, example words, cross-attention heatmaps in runs/g2p/, and the fresh model
# beside the shipped one. Running it again starts over in runs/g2p (--overwrite); `tfmr lm train` alone
# never replaces a run.
run: $(STAMP)
	$(VENV)/bin/tfmr g2p train --preset g2p-small --out runs/g2p --overwrite

# A character-level language model on the embedded corpus (Python's own docs), samples at the end.
lm: $(STAMP)
	$(VENV)/bin/tfmr lm train --preset default --out runs/default --overwrite

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(VENV)/bin/tfmr bench train --preset nanogpt-shakespeare-char

clean:
	rm -rf $(VENV) runs .pytest_cache
