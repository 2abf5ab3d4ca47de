"""The HTTP side of `tfmr explore`: the standard library's http.server, a handful of assets and a
small JSON API over one Session (session.py). No framework, nothing fetched from the network.

    GET  /                        the page (static/index.html)
    GET  /static/<name>           one of the files shipped in static/ (a fixed list read at start:
                                  any other path, `..` or `%2e%2e` included, is 404)
    GET  /api/info                what the model is
    POST /api/<view>              JSON in, JSON out: tokens, attention, distribution, step, decode,
                                  beam, positions (the Session method of that name)
    GET  /api/export?text=...&generated=1,2&format=json|safetensors
                                  every layer's attention for one input, as a download

A request the session refuses (ConfigError: an empty prompt, unknown characters, too long) is a
400 with {"error": "one line"} that the page shows; anything else that goes wrong in a request is
a 500 with one line, and the server goes on serving. Model calls take turns (one lock): the
model is not safe to run from two threads at once. The server binds to the host it is given
(127.0.0.1 by default) and answers only requests addressed to that host (the Host header), so a
web page elsewhere cannot reach it through a DNS name that points at this machine; served on every
interface (0.0.0.0), it answers any name.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from ipaddress import ip_address
from urllib.parse import parse_qs, urlsplit

from ..config import ConfigError, parse_json
from .session import Session, export_json, export_safetensors

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
MAX_BODY = 1 << 20  # a request body larger than 1 MiB is refused
VIEWS = ("tokens", "attention", "distribution", "step", "decode", "beam", "positions")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def load_assets() -> dict[str, tuple[bytes, str]]:
    """Every file of static/ (package data): URL path -> (bytes, content type)."""
    assets = {}
    for item in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in TYPES:
            assets[f"/static/{item.name}"] = (item.read_bytes(), TYPES[suffix])
    assets["/"] = assets["/static/index.html"]
    return assets


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """The Host header values this server answers: the host it was given (and, on loopback, the
    other names of loopback), with and without the port. None (any) for an address that means
    every interface (0.0.0.0, ::): whoever serves there chose to be reached by any name."""
    names = {host.lower(), f"[{host.lower()}]"}
    try:
        address = ip_address(host)
        if address.is_unspecified:
            return None
        if address.is_loopback:
            names.update(LOOPBACK_NAMES)
    except ValueError:
        if host.lower() == "localhost":
            names.update(LOOPBACK_NAMES)
    return names | {f"{n}:{port}" for n in names}


class LocalHandler(BaseHTTPRequestHandler):
    """What every local server of tfmr answers with (`tfmr explore`, `tfmr g2p serve`): JSON or bytes,
    no caching, one-line errors, and only the Host names it serves (`allowed_hosts`). The server
    has `verbose`, `hosts` and `host`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = (
        True  # keep-alive replies go out at once (no 40 ms wait for a delayed ACK)
    )

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        if self.server.verbose:
            super().log_message(format, *args)

    def send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, data) -> None:
        self.send(status, json.dumps(data).encode("utf-8"), "application/json")

    def error(self, status: int, message: str) -> None:
        self.send_json(status, {"error": message})

    def host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        if self.server.hosts is None or (host and host in self.server.hosts):
            return True
        self.error(
            HTTPStatus.MISDIRECTED_REQUEST, f"this server answers only on {self.server.host}"
        )
        return False


class Handler(LocalHandler):
    """One request: an asset, or a view of the session as JSON."""

    server: ExploreServer
    server_version = "tfmr-explore"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self.host_ok():
            return
        url = urlsplit(self.path)
        if url.path == "/api/info":
            return self.run_view(lambda s: s.info())
        if url.path == "/api/export":
            return self.export(parse_qs(url.query))
        asset = self.server.assets.get(url.path)  # exact paths only: nothing is read from disk here
        if asset is None:
            return self.error(HTTPStatus.NOT_FOUND, "not found")
        self.send(HTTPStatus.OK, *asset)

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        if not self.host_ok():
            return
        view = urlsplit(self.path).path.removeprefix("/api/")
        if view not in VIEWS:
            return self.error(HTTPStatus.NOT_FOUND, "not found")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            return self.error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a request body is at most {MAX_BODY} bytes"
            )
        try:
            args = parse_json(self.rfile.read(length) or b"{}", "the request body")
        except (
            ConfigError
        ) as e:  # invalid, nested too deep (a RecursionError otherwise), a 5,000-digit number
            return self.error(HTTPStatus.BAD_REQUEST, first_line(e))
        if not isinstance(args, dict):
            return self.error(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
        self.run_view(lambda s: getattr(s, view)(**args))

    def run_view(self, call) -> None:
        try:
            with self.server.lock:
                result = call(self.server.session)
        except (
            ConfigError,
            TypeError,
            ValueError,
        ) as e:  # a bad request: a setting, a missing field
            return self.error(HTTPStatus.BAD_REQUEST, first_line(e))
        except Exception as e:  # noqa: BLE001 - one request failing must not stop the server
            return self.error(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {first_line(e)}"
            )
        self.send_json(HTTPStatus.OK, result)

    def export(self, query: dict) -> None:
        text = query.get("text", [""])[0]
        fmt = query.get("format", ["json"])[0]
        if fmt not in ("json", "safetensors"):
            return self.error(HTTPStatus.BAD_REQUEST, "format must be json or safetensors")
        try:
            generated = [int(g) for g in query.get("generated", [""])[0].split(",") if g.strip()]
            with self.server.lock:
                tensors, labels = self.server.session.export(text, generated)
        except (ConfigError, ValueError) as e:
            return self.error(HTTPStatus.BAD_REQUEST, first_line(e))
        except Exception as e:  # noqa: BLE001
            return self.error(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {first_line(e)}"
            )
        if fmt == "json":
            body, kind = export_json(tensors, labels), "application/json"
        else:
            body, kind = export_safetensors(tensors, labels), "application/octet-stream"
        name = f"attention.{fmt}"
        self.send(
            HTTPStatus.OK, body, kind, {"Content-Disposition": f'attachment; filename="{name}"'}
        )


def first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class ExploreServer(ThreadingHTTPServer):
    """A threading HTTP server bound to (host, port) that serves one Session."""

    daemon_threads = True
    request_queue_size = (
        128  # socketserver's 5 resets connections when a page and a few scripts ask at once
    )

    def __init__(
        self, session: Session, host: str = "127.0.0.1", port: int = 0, verbose: bool = False
    ):
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)
        self.session, self.host, self.verbose = session, host, verbose
        self.lock = threading.Lock()
        self.assets = load_assets()
        self.hosts = allowed_hosts(host, self.server_address[1])

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-answer (a closed tab) is no error of the server's."""
        if isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipeError, ConnectionResetError
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.server_address[1]}/"


def serve(
    session: Session, host: str = "127.0.0.1", port: int = 8765, verbose: bool = False
) -> ExploreServer:
    """A server for `session` on (host, port), not yet serving (call serve_forever). A port in use
    or a host this machine does not have is a ConfigError; so is an empty host, which would listen
    on every interface."""
    if not host.strip():
        raise ConfigError(
            "--host is empty, which would listen on every interface; give an address "
            "(127.0.0.1: this machine only; 0.0.0.0: every interface, if you mean it)"
        )
    try:
        return ExploreServer(session, host, port, verbose)
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
