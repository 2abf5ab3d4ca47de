"""`tfmr g2p serve`: the G2P HTTP endpoint (tfmr/tasks/g2p_server.py) on this machine.

    tfmr g2p serve [--port 8766] [--host 127.0.0.1] [--checkpoint DIR] [--beam K]

Loads the model first (the shipped one unless --checkpoint names another; a bad checkpoint is one
line and exit code 2), then answers `POST /g2p` until Ctrl-C. Loopback only unless --host says
otherwise, with the host rules of `tfmr explore`. (Once `tfmr serve --g2p`: cli/spellings.py.)
"""

from __future__ import annotations

from .common import count, serve_until_interrupted

DEFAULT_PORT = 8766


def add_parser(verbs) -> None:
    """`serve`, a verb of `tfmr g2p` (cli/g2p.py)."""
    p = verbs.add_parser(
        "serve",
        help="an HTTP endpoint on this machine: POST /g2p, JSON out",
        description='Serve G2P: POST /g2p with {"text": ...} or {"words": [...]}, JSON out '
        "(what `tfmr g2p` prints, and each word typed).",
    )
    p.add_argument(
        "--port",
        type=count,
        default=DEFAULT_PORT,
        help=f"the port (default {DEFAULT_PORT}; 0: any free one)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to serve on (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        help="the G2P model (a training checkpoint or an export; default the shipped one); "
        "repeat it for an ensemble of models with one vocabulary",
    )
    p.add_argument(
        "--beam", type=int, help="beam for predicted words (default the model's decode.beam_size)"
    )
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..g2p import G2P
    from ..tasks.g2p_server import serve

    server = serve(G2P(args.checkpoint, args.beam), args.host, args.port, args.verbose)
    return serve_until_interrupted(
        server, f'tfmr g2p serve: G2P at {server.url} (POST JSON {{"text": "..."}}; Ctrl-C to stop)'
    )
