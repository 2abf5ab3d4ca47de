"""`tfmr copytask`: the pointer-generator against the plain softmax head on a task where copying
matters (the task and its flags are tfmr/tasks/copytask.py; `python -m tfmr.tasks.copytask` is the
same program).
"""
from __future__ import annotations

from ..tasks import copytask


def add_parser(sub) -> None:
    doc = copytask.__doc__.splitlines()[0]
    p = sub.add_parser("copytask", help="the copy task: pointer-generator vs the plain head on never-seen symbols",
                       description=doc)
    copytask.add_arguments(p)
    p.set_defaults(func=copytask.main)
