"""`tfmr bench NAME`: the speed runs (tfmr/bench/), each printing figures beside a peer.

`tfmr bench --help` lists them; `tfmr bench NAME --help` gives each one's flags.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    from ..bench import BENCHES

    p = sub.add_parser(
        "bench",
        help="benchmarks: speed figures beside peers, measured in the same run",
        description="Speed runs; each prints a table (and writes JSON / markdown where asked).",
    )
    benches = p.add_subparsers(dest="what", required=True, metavar="NAME")
    for name, module in BENCHES.items():
        doc = (module.__doc__ or "").strip().splitlines()[0]
        b = benches.add_parser(name, help=doc, description=doc)
        module.add_arguments(b)
        b.set_defaults(func=module.main)
