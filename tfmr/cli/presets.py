"""`tfmr presets`: every preset with the command that uses it and its description (its docstring's
first paragraph, tfmr.presets.describe), one line each; `-v` prints each one's whole config. The
registry is tfmr.presets.PRESETS.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "presets", help="list presets (every command's), with the command that uses each"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print each preset's full config")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import dumps
    from ..presets import PRESETS, describe

    width = max(map(len, PRESETS))
    cmd_width = max(len(command) for command, _ in PRESETS.values()) + len("tfmr ")
    for name, (command, fn) in PRESETS.items():
        doc = describe(name)
        if args.verbose:
            print(f"# {name} ({f'tfmr {command}'}): {doc}\n{dumps(fn())}")
        else:
            print(f"{name:<{width}}  {f'tfmr {command}':<{cmd_width}}  {doc}")
    return 0
