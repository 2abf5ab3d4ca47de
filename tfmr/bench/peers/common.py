"""What every G2P peer shares: the result of its run and the two ways it can stop the bench.

PeerRun         one peer's training time (per step), decoding time, predictions, one-word latency
PeerMissing     its programs are not installed (one line: the extra and the pip command)
PeerFailed      one of its programs exited with an error (one line: the program and its last words)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...config import ConfigError


class PeerMissing(ConfigError):
    """A peer's programs are not installed; the message names the extra that installs them."""


class PeerFailed(ConfigError):
    """A peer's program exited with an error; the message names it and quotes its last line."""


@dataclass
class PeerRun:
    name: str
    settings: str  # how it was trained and decoded, in a few words
    train_words: int
    train_seconds: float  # all training steps (what a user waits for), files written excluded
    steps: dict  # {step name: seconds}
    decode_seconds: float  # pronouncing every word in one call (model loading included)
    predictions: list  # one phoneme list per word, in the order given
    one_word: float | None = (
        None  # median seconds of single-word calls in one process (None: not measured)
    )
    notes: list = field(default_factory=list)  # lines worth printing under the table
