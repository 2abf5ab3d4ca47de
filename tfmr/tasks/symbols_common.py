"""What the task layer (tfmr/tasks/symbols.py) shares with the command line, needing no torch.

    SPLITS                  the split names, in order: train, dev, test
    RL_OBJECTIVES           a fine-tuning command's --objective -> its train.objective kind
    FINETUNE_DEFAULTS       the --set assignments every RL fine-tuning run starts from
    FINETUNE_SAMPLES        sequences drawn per source, by objective kind
    FINETUNE_RECORD         the fine-tuning run's record in its folder (finetune.json)
    escape(text)            a TSV field: backslashes, tabs and line breaks escaped

They live apart from symbols.py (which imports torch) so that `tfmr g2p --help` and a dictionary
look-up such as `tfmr g2p hello` load no torch; symbols.py re-exports them all.
"""

from __future__ import annotations

SPLITS = ("train", "dev", "test")

# --objective -> the train.objective kind (tfmr.objectives.OBJECTIVES)
RL_OBJECTIVES = {"scst": "self-critical", "mrt": "mrt", "reinforce": "reinforce"}
# What a fine-tuning run changes in the base model's config before --set: a small learning rate
# and a few hundred steps on small batches (each RL step decodes `samples` sequences per source).
# Measured on the G2P model shipped at step 6,530 (docs/objectives.md): SCST with reward exact at
# these settings lowered test WER (32.47 -> 32.20% greedy); 300 steps at lr 1e-4 with reward per
# raised it (33.29%). The weights tested after are those of the lowest dev WER, evaluated every 25
# steps and at the start.
FINETUNE_DEFAULTS = (
    "train.steps=100",
    "train.lr=3e-5",
    "train.min_lr=3e-6",
    "train.warmup=10",
    "train.batch_size=64",
    "train.batch_tokens=0",
    "train.weight_decay=0.0",
    "train.eval_every=25",
    "train.keep_best=dev_wer",
    "train.checkpoint_every=100",
    "train.log_every=10",
    "train.max_minutes=0",
    "train.guided_attention=0",
)
FINETUNE_SAMPLES = {"self-critical": 4, "mrt": 8, "reinforce": 4}  # sequences drawn per source
FINETUNE_RECORD = (
    "finetune.json"  # in the run folder: the source and the test results before and after
)


def escape(text: str) -> str:
    """A TSV field: backslashes, tabs and line breaks escaped."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
