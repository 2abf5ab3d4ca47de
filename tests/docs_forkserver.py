"""The docs test's `tfmr`: one interpreter imports tfmr once, then forks a child per command.

    python docs_forkserver.py serve SOCKET      the server: imports tfmr.cli, then per connection
                                                forks a child that runs the command as `python`
                                                would: `-m tfmr ARGS` (tfmr/__main__.py), `-c CODE`
                                                or `SCRIPT.py ARGS`
    python docs_forkserver.py run ARGV ...      a command: sends ARGV (python's), the working folder,
                                                the environment and its standard streams to the
                                                server ($TFMR_DOCS_FORKSERVER), exits with the
                                                child's status

Every command of the docs starts Python and imports torch and tfmr, about 3 CPU seconds before any
work; over a hundred commands that was most of the docs test's cost. A forked child starts from an
interpreter that has done the imports and read CMUdict into its splits (tfmr.tasks.g2p.load_data
keeps them for the process, as a long-running `tfmr g2p serve` does; each G2P command spent 2-5
CPU seconds reading it), and nothing else: no model, no thread pool. It then takes the command's
streams, folder, environment and arguments, so the command itself runs as written. The child
ends when the command does, or when its caller goes away (a timeout).

Not here: which commands run (tests/test_docs_commands.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading

HEADER = 8  # bytes of the request's length


def run(args: list[str]) -> int:
    """Have the server run `tfmr ARGS` here; its exit status."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(os.environ["TFMR_DOCS_FORKSERVER"])
    request = json.dumps({"argv": args, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(conn, [len(request).to_bytes(HEADER, "big")], [0, 1, 2])
    conn.sendall(request)
    status = b""
    while len(status) < 4:
        chunk = conn.recv(4 - len(status))
        if not chunk:
            return 1  # the child died without a status (killed)
        status += chunk
    return int.from_bytes(status, "big")


def serve(path: str) -> None:
    """Import tfmr's command line, then fork a child per connection on the socket `path`, until
    SIGTERM; every child is waited for, so the CPU time of the commands counts as this process's
    children's (and, once it is waited for, as its caller's: `time` measures them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401 - the imports the commands would repeat: plots,
    import torch._dynamo  # noqa: F401 - the optimizer's (torch imports it on first use),
    import transformers  # noqa: F401 - the peers' and the Hugging Face folders',

    import tfmr.cli  # noqa: F401 - and tfmr's own
    from tfmr.tasks import g2p

    for stress in (False, True):  # CMUdict read once: every G2P command starts by reading it
        g2p.load_data(stress)

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    server.settimeout(0.5)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    print("ready", flush=True)
    while not stop:
        _reap(os.WNOHANG)
        try:
            conn, _ = server.accept()
        except (TimeoutError, InterruptedError):
            continue
        if os.fork() == 0:
            server.close()
            os._exit(_child(conn))
        conn.close()
    _reap(0)


def _reap(flags: int) -> None:
    """Wait for the finished children (flags 0: for every child)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, flags)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _child(conn: socket.socket) -> int:
    """Take over the caller's streams, folder and environment, run the command, send its status."""
    header, fds, _, _ = socket.recv_fds(conn, HEADER, 3)
    size, request = int.from_bytes(header, "big"), b""
    while len(request) < size:
        request += conn.recv(size - len(request))
    req = json.loads(request)
    for fd, target in zip(fds, (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_end_with_caller, args=(conn,), daemon=True).start()
    code = _main(req["argv"])
    sys.stdout.flush()
    sys.stderr.flush()
    _log_cpu(req["argv"])
    conn.sendall(code.to_bytes(4, "big"))
    return code


def _log_cpu(argv: list[str]) -> None:
    """Add this command's CPU seconds (user + system, its own and its children's) to the log
    beside the socket, which the docs test reads to show what each command cost."""
    import resource

    used = sum(
        r.ru_utime + r.ru_stime
        for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )
    with open(os.environ["TFMR_DOCS_FORKSERVER"] + ".cpu", "a") as log:
        log.write(f"{used:.2f}\t{' '.join(argv)[:80]}\n")


def _main(argv: list[str]) -> int:
    """What `python ARGV` does for `-m tfmr ARGS`, `-c CODE ARGS` and `SCRIPT ARGS`: its exit
    status, a traceback printed as the interpreter prints it."""
    import runpy

    try:
        if argv[:2] == ["-m", "tfmr"]:
            from tfmr.cli import main

            sys.argv, sys.path[0] = ["tfmr", *argv[2:]], os.getcwd()
            return main() or 0
        if argv[0] == "-c":
            sys.argv, sys.path[0] = ["-c", *argv[2:]], os.getcwd()
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102
            return 0
        sys.argv, sys.path[0] = list(argv), os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseException:  # noqa: BLE001 - printed as the interpreter would, then status 1
        import traceback

        traceback.print_exc()
        return 1


def _end_with_caller(conn: socket.socket) -> None:
    """Exit when the caller closes the connection (it was killed: a timeout)."""
    try:
        conn.recv(1)
    except OSError:
        pass
    os._exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(run(sys.argv[2:]))
