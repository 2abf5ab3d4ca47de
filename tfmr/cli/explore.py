"""`tfmr explore`: a local web page that shows a checkpoint at work (tfmr/explore/).

    tfmr explore --checkpoint RUN/checkpoint|HF-FOLDER [--port 8765] [--host 127.0.0.1]
    tfmr explore --g2p                        the G2P model shipped with tfmr (tfmr/tasks/g2p_model)

Loads the checkpoint first (a folder that does not exist or is no checkpoint is one line and exit
code 2), then serves the page until Ctrl-C. Loopback only unless --host says otherwise.
"""

from __future__ import annotations

from .common import count, serve_until_interrupted

DEFAULT_PORT = 8765


def add_parser(sub) -> None:
    p = sub.add_parser(
        "explore", help="a local web page: tokens, attention, sampling, beam tree, positions"
    )
    p.add_argument(
        "--checkpoint",
        help="a checkpoint folder (a language model or an "
        "encoder-decoder such as G2P), or a Hugging Face folder of a decoder-only model",
    )
    p.add_argument(
        "--g2p", action="store_true", help="open the G2P model shipped with tfmr (no --checkpoint)"
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
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..explore.server import serve
    from ..explore.session import open_checkpoint

    session = open_checkpoint(model_folder(args))
    if args.g2p:
        session.name = "the shipped G2P model"
    server = serve(session, args.host, args.port, args.verbose)
    return serve_until_interrupted(
        server,
        f"tfmr explore: {session.kind} model from {session.directory} at "
        f"{server.url} (Ctrl-C to stop)",
    )


def model_folder(args):
    """--checkpoint, or with --g2p the shipped G2P model; one of the two (ConfigError otherwise)."""
    from ..config import ConfigError

    if args.g2p and args.checkpoint:
        raise ConfigError("give --checkpoint DIR or --g2p (the shipped G2P model), not both")
    if not args.g2p:
        if not args.checkpoint:
            raise ConfigError(
                "tfmr explore needs a model: --checkpoint DIR (a checkpoint or a Hugging Face "
                "folder), or --g2p for the G2P model shipped with tfmr"
            )
        return args.checkpoint
    from ..tasks import g2p

    if not g2p.shipped_model_exists():
        raise g2p.NoShippedModel(
            f"no G2P model is shipped in this build of tfmr (none in {g2p.SHIPPED}); "
            "pass --checkpoint DIR"
        )
    return g2p.SHIPPED
