"""`tfmr lm VERB`: language models.

    tfmr lm train      train a language model, then print samples from it      (cli/train.py)
    tfmr lm generate   text from a checkpoint, streamed, or beam search's best  (cli/generate.py)
    tfmr lm eval       evaluate a checkpoint: `eval decoding` compares strategies (cli/eval.py)
    tfmr lm finetune   LoRA or bottleneck adapters on a checkpoint              (cli/finetune.py)

Each verb's module adds its own parser (and flags) under this one.
"""

from __future__ import annotations

from . import eval as eval_
from . import finetune, generate, train

VERBS = (train, generate, eval_, finetune)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "lm",
        help="language models: train | generate | eval | finetune",
        description="Language models: tfmr lm VERB [flags]; tfmr lm VERB --help gives its flags.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.add_parser(verbs)
