"""What the command modules share beyond tfmr.programs: checkpoint flags, loading --checkpoint.

    checkpoint_flags(p)     --checkpoint (a tfmr checkpoint or a Hugging Face folder), --allow-pickle
    load_model(dir)         (model, tokenizer, RunConfig) of --checkpoint: tfmr.load (a checkpoint,
                            an export or a Hugging Face folder, said on stderr)
    encode_text(tok, text)  ids, or one line naming the characters the tokenizer never saw
    serve_until_interrupted the serve loop of `tfmr explore` and `tfmr g2p serve`

The helpers every program shares (the user-error rule, --preset / --config / --set, argparse
types, the parser whose --help shows defaults) live in tfmr/programs.py, so that the tasks, the
benchmarks and the experiments never import the command line; they are imported here for the
command modules.
"""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, RunConfig
from ..programs import (  # noqa: F401 (re-exported for the command modules)
    USER_ERRORS,
    Parser,
    config_flags,
    count,
    guarded,
    out_folder,
    positive_float,
    positive_int,
    resolve_config,
    torch_device,
)


def checkpoint_flags(
    p: argparse.ArgumentParser, what: str = "a checkpoint folder (RUN/checkpoint)"
) -> None:
    """--checkpoint (a tfmr checkpoint or a Hugging Face folder) and --allow-pickle."""
    p.add_argument(
        "--checkpoint",
        required=True,
        help=f"{what}, or a Hugging Face model folder (config.json + safetensors + tokenizer.json)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="a Hugging Face folder with only pytorch_model.bin: read it with "
        "torch.load(weights_only=True) (default: refused)",
    )


def load_model(checkpoint_dir, allow_pickle: bool = False, expect: type | None = RunConfig):
    """(model, tokenizer or vocabulary, config) of --checkpoint, through tfmr.load: a checkpoint, an
    export or a Hugging Face folder (said on stderr); a run folder is pointed at its checkpoint.
    `expect`: the config class the command reads (None: any, a G2P checkpoint's vocab.json too)."""
    from ..loading import load

    loaded = load(checkpoint_dir, expect, runs=False, allow_pickle=allow_pickle)
    if loaded.kind == "hf":
        print(
            f"loaded Hugging Face folder {checkpoint_dir} (model_type {loaded.model_type})",
            file=sys.stderr,
        )
    return loaded.model, loaded.vocab, loaded.config


def encode_text(tokenizer, text: str, what: str = "the prompt") -> list[int]:
    """tokenizer.encode(text), a character the tokenizer never saw being one line naming it
    (ConfigError) instead of a traceback."""
    try:
        return tokenizer.encode(text)
    except ValueError as e:
        raise ConfigError(f"{what} cannot be encoded: {e}") from None


def serve_until_interrupted(server, banner: str) -> int:
    """Print `banner`, serve until Ctrl-C (then "stopped" on standard error), close the socket: 0.
    The loop of every local server command (`tfmr explore`, `tfmr g2p serve`)."""
    print(banner, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
