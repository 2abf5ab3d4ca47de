"""The G2P HTTP endpoint behind `tfmr g2p serve`: the standard library's http.server over one
engine (tfmr.g2p.G2P), its model loaded once at start.

    POST /g2p      a JSON object in: {"text": "..."} (the text front end, as `tfmr g2p --text`) or
                   {"words": ["...", ...]} (words as they are, as `tfmr g2p WORD ...`), and optional
                   "format" (arpabet | ipa), "stress" (bool), "all" (bool); a text/plain body is a
                   text. JSON out: {"words": [Word as a dict, ...], "tsv": [the lines `tfmr g2p`
                   prints], "joined": [the `--join` lines] (texts only), "status": 0 | 1 (1: some
                   word unreadable or low-confidence)}
    GET  /health   {"ok": true, "model": "the folder", "stress": whether the model predicts stress}

Host rules are explore's (tfmr/explore/server.py, `allowed_hosts`): it binds to 127.0.0.1 unless
told otherwise and answers only requests addressed to the host it serves (the Host header). A bad
request is a 400 with {"error": "one line"}; a word that needs a model when none is shipped is a
503; anything else that fails is a 500 with one line, and the server goes on. Model calls take
turns (one lock). What it leaves out: TLS, authentication, batching requests together.
"""

from __future__ import annotations

import json
import socket
import threading
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

from ..config import ConfigError
from ..explore.server import MAX_BODY, LocalHandler, allowed_hosts, first_line
from ..g2p import G2P, PROBLEMS, joined, tsv_lines
from . import g2p as task

OPTIONS = ("text", "words", "format", "stress", "all")


def answer(engine: G2P, request: dict) -> dict:
    """The JSON answer to one request (see the module docstring); ConfigError for a bad one."""
    unknown = sorted(set(request) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown field {unknown[0]!r}; valid: {', '.join(OPTIONS)}")
    text, words = request.get("text"), request.get("words")
    if (text is None) == (words is None):
        raise ConfigError('give "text" (a string) or "words" (a list of strings), not both')
    if text is not None and not isinstance(text, str):
        raise ConfigError('"text" must be a string')
    if words is not None and not (
        isinstance(words, list) and all(isinstance(w, str) for w in words)
    ):
        raise ConfigError('"words" must be a list of strings')
    fmt, stress, every = (
        request.get("format", "arpabet"),
        request.get("stress", False),
        request.get("all"),
    )
    if not isinstance(stress, bool) or not isinstance(every, (bool, type(None))):
        raise ConfigError('"stress" and "all" must be true or false')
    result = engine(text if text is not None else words, fmt, stress, every)
    out = {
        "words": [w.to_dict() for w in result],
        "tsv": tsv_lines(result, notes=text is not None),
        "status": int(any(w.source in PROBLEMS for w in result)),
    }
    if text is not None:
        lines: dict[int, list] = {}
        for w in result:
            lines.setdefault(w.line, []).append(w)
        out["joined"] = [joined(lines[n], fmt) for n in sorted(lines)]
    return out


class Handler(LocalHandler):
    """One request: POST /g2p or GET /health."""

    server: G2PServer
    server_version = "tfmr-g2p"

    def send_json(self, status: int, data) -> None:
        """JSON in UTF-8 as it is (IPA stays readable), where explore's escapes to ASCII."""
        self.send(
            status,
            json.dumps(data, ensure_ascii=False).encode("utf-8"),
            "application/json; charset=utf-8",
        )

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self.host_ok():
            return
        if urlsplit(self.path).path != "/health":
            return self.error(HTTPStatus.NOT_FOUND, "not found (POST /g2p, GET /health)")
        self.send_json(HTTPStatus.OK, self.server.health)

    def do_POST(self) -> None:  # noqa: N802
        if not self.host_ok():
            return
        if urlsplit(self.path).path != "/g2p":
            return self.error(HTTPStatus.NOT_FOUND, "not found (POST /g2p, GET /health)")
        request = self.read_request()
        if request is None:
            return
        try:
            with self.server.lock:
                result = answer(self.server.engine, request)
        except task.NoShippedModel as e:
            return self.error(HTTPStatus.SERVICE_UNAVAILABLE, first_line(e))
        except ConfigError as e:
            return self.error(HTTPStatus.BAD_REQUEST, first_line(e))
        except Exception as e:  # noqa: BLE001 - one request failing must not stop the server
            return self.error(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {first_line(e)}"
            )
        self.send_json(HTTPStatus.OK, result)

    def read_request(self) -> dict | None:
        """The request as a dict (a text/plain body is {"text": body}), or None after an error reply."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self.error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a request body is at most {MAX_BODY} bytes"
            )
            return None
        body = self.rfile.read(length)
        if (self.headers.get("Content-Type") or "").startswith("text/plain"):
            return {"text": body.decode("utf-8", errors="replace")}
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            self.error(HTTPStatus.BAD_REQUEST, "the request body is not JSON (or send text/plain)")
            return None
        if not isinstance(request, dict):
            self.error(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
            return None
        return request


class G2PServer(ThreadingHTTPServer):
    """A threading HTTP server bound to (host, port) over one G2P engine."""

    daemon_threads = True

    def __init__(self, engine: G2P, host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)
        self.engine, self.host, self.verbose = engine, host, verbose
        self.lock = threading.Lock()
        self.hosts = allowed_hosts(host, self.server_address[1])
        self.health = {"ok": True, "model": None, "stress": None}

    def load(self) -> None:
        """Load the model now (not on the first request); a build without one serves the dictionary."""
        try:
            _, _, cfg = self.engine.model()
        except task.NoShippedModel:
            return
        self.health.update(
            model=str(self.engine.checkpoint or task.SHIPPED), stress=bool(cfg.data.stress)
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.server_address[1]}/g2p"


def serve(
    engine: G2P, host: str = "127.0.0.1", port: int = 8766, verbose: bool = False
) -> G2PServer:
    """A server for `engine` on (host, port) with its model loaded, not yet serving (call
    serve_forever). A port in use or a host this machine does not have is a ConfigError."""
    try:
        server = G2PServer(engine, host, port, verbose)
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    server.load()
    return server
