"""`tfmr explore`: a local web page that shows a checkpoint at work (tfmr/explore/).

    tfmr explore --checkpoint RUN/checkpoint|HF-FOLDER [--port 8765] [--host 127.0.0.1]

Loads the checkpoint first (a folder that does not exist or is no checkpoint is one line and exit
code 2), then serves the page until Ctrl-C. Loopback only unless --host says otherwise.
"""
from __future__ import annotations

from .common import count, serve_until_interrupted

DEFAULT_PORT = 8765


def add_parser(sub) -> None:
    p = sub.add_parser("explore", help="a local web page: tokens, attention, sampling, beam tree, positions")
    p.add_argument("--checkpoint", required=True, help="a checkpoint folder (a language model or an "
                   "encoder-decoder such as G2P), or a Hugging Face folder of a decoder-only model")
    p.add_argument("--port", type=count, default=DEFAULT_PORT, help=f"the port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="the address to serve on (default 127.0.0.1: this "
                   "machine only)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..explore.server import serve
    from ..explore.session import open_checkpoint

    session = open_checkpoint(args.checkpoint)
    server = serve(session, args.host, args.port, args.verbose)
    return serve_until_interrupted(server, f"tfmr explore: {session.kind} model from {session.directory} at "
                                           f"{server.url} (Ctrl-C to stop)")
