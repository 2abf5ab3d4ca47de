"""The user-error classes that need no torch: a checkpoint or a data file a user can fix.

    CheckpointError   a checkpoint that is missing, incomplete, tampered with or from another model
    DataError         input text that cannot be used; the message names the file and the reason

They live here, apart from tfmr/checkpoint.py and tfmr/data.py (which import torch), so that the
command line can name them in its one-line error rule (tfmr/programs.py) without loading torch;
their old homes re-export them. ConfigError stays in tfmr/config.py, which is torch-free too.
"""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, tampered with or from another model."""


class DataError(ValueError):
    """Input text that cannot be used; the message names the file and the reason."""
