"""`tfmr g2p serve` under concurrent clients: requests/s and latency for one word a request.

Starts `tfmr g2p serve --port 0` as its own process (the model loaded once there), waits for
its address, then for each client count runs that many threads, each with its own keep-alive
HTTP connection, posting {"words": [WORD]} back to back for --seconds. Prints requests/s and the
median / 95th-percentile latency per client count, for a dictionary word and for a word the
model must pronounce. Run it on a quiet machine; figures on a busy one mean little.

    tfmr bench g2p-serve [--checkpoint DIR] [--clients 1 --clients 4 --clients 16] [--seconds 10]
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

WORDS = (("dictionary", "hello"), ("predicted", "blorftastic"))


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", help="a G2P checkpoint or export (default: the shipped model)")
    p.add_argument(
        "--clients",
        type=int,
        action="append",
        help="concurrent clients (repeatable; default 1, 4, 16)",
    )
    p.add_argument(
        "--seconds", type=float, default=10.0, help="how long each run lasts (default 10)"
    )
    p.add_argument("--beam", type=int, help="the server's beam (default the model's)")


def start_server(checkpoint: str | None, beam: int | None) -> tuple[subprocess.Popen, str]:
    """`tfmr g2p serve --port 0` in a child process, and the URL it printed."""
    cmd = [sys.executable, "-m", "tfmr", "g2p", "serve", "--port", "0"]
    cmd += ["--checkpoint", checkpoint] if checkpoint else []
    cmd += ["--beam", str(beam)] if beam else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if " at http" not in line:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line.strip() or 'no output'}")
    return proc, line.split(" at ", 1)[1].split()[0]


def _client(url: str, word: str, until: float, latencies: list, errors: list) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    body = json.dumps({"words": [word]})
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        conn.request("POST", parts.path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            errors.append(response.status)
        latencies.append(time.perf_counter() - t0)
    conn.close()


def measure(url: str, word: str, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[int] = []
    until = time.perf_counter() + seconds
    threads = [
        threading.Thread(target=_client, args=(url, word, until, latencies, errors))
        for _ in range(clients)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "errors": len(errors),
        "p50_ms": 1000 * statistics.median(ordered) if ordered else float("nan"),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))] if ordered else float("nan"),
    }


def main(args) -> int:
    proc, url = start_server(args.checkpoint, args.beam)
    try:
        for _kind, word in WORDS:
            _client(url, word, time.perf_counter() + 1.0, [], [])  # warm up
        print(f"tfmr g2p serve at {url}, one word a request, {args.seconds:g} s a run")
        print(f"{'word':<24} {'clients':>7} {'requests/s':>11} {'p50':>9} {'p95':>9} {'errors':>7}")
        for kind, word in WORDS:
            for clients in args.clients or [1, 4, 16]:
                r = measure(url, word, clients, args.seconds)
                print(
                    f"{word + ' (' + kind + ')':<24} {clients:>7} {r['rps']:>11,.1f} {r['p50_ms']:>7.1f}ms "
                    f"{r['p95_ms']:>7.1f}ms {r['errors']:>7}"
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0
