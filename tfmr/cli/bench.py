"""`tfmr bench NAME`: the speed runs (tfmr/bench/), each printing figures beside a peer.

`tfmr bench --help` lists them; `tfmr bench NAME --help` gives each one's flags. A bench's module
is imported only when it is the one asked for (tfmr.programs.lazy_commands).
"""

from __future__ import annotations

from ..programs import lazy_commands


def add_parser(sub) -> None:
    from ..bench import MODULES

    p = sub.add_parser(
        "bench",
        help="benchmarks: speed figures beside peers, measured in the same run",
        description="Speed runs; each prints a table (and writes JSON / markdown where asked).",
    )
    benches = p.add_subparsers(dest="what", required=True, metavar="NAME")
    lazy_commands(benches, MODULES)  # NAME's module (and torch) is imported when NAME runs
