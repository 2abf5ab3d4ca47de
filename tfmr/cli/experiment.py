"""`tfmr experiment NAME`: research experiments that write a table and a plot (tfmr/experiments/).

Each experiment takes the common --preset / --config / --set flags (its base run, from a preset
named exp-NAME) plus its own few flags, and varies one axis on top of the resolved config;
g2p-rl, which fine-tunes a given model, takes --checkpoint and --set (the fine-tuning settings);
copytask (once `tfmr copytask`) starts from its preset `copytask`.
"""

from __future__ import annotations

from ..programs import lazy_commands


def add_parser(sub) -> None:
    from ..experiments import MODULES

    p = sub.add_parser(
        "experiment",
        help="research experiments that write a table and a plot",
        description="tfmr experiment NAME [flags]; tfmr experiment NAME --help gives its flags.",
    )
    exp = p.add_subparsers(dest="name", required=True, metavar="NAME")
    lazy_commands(exp, MODULES)  # NAME's module (and torch) is imported when NAME runs
