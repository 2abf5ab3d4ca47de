"""The run-folder lock: while a process trains into a run folder, OUT/run.lock holds its pid, so a
second process cannot train into the same folder.

    claim_run_folder(out)     take the lock (a stale one, whose process is gone, is replaced)
    release_run_folder(out)   give it back (only the process that holds it removes it)

What a run folder may hold and when it may be replaced is tfmr.folders; the loop that claims and
releases the lock is loop.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .config import ConfigError

LOCK = "run.lock"  # in a run folder while a process trains into it: that process's pid


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def claim_run_folder(out: Path) -> None:
    """Write OUT/run.lock with this process's pid, so that a second process cannot train into
    the same folder. A lock whose process is gone (killed) is stale: it is replaced, with a note.
    The lock is released by `release_run_folder` when training ends."""
    lock = out / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            text = lock.read_text().strip() if lock.exists() else ""
            pid = int(text) if text.isdigit() else None
            if pid == os.getpid():
                return  # this process holds it already (a resumed trainer in the same process)
            if pid is not None and _pid_alive(pid):
                raise ConfigError(
                    f"another run (pid {pid}) is training in {out}; wait for it, or use another --out"
                ) from None
            print(
                f"note: removing a stale lock in {out} (pid {pid} is not running)", file=sys.stderr
            )
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return
    raise ConfigError(f"could not lock the run folder {out}")


def release_run_folder(out: Path) -> None:
    lock = out / LOCK
    try:
        if lock.read_text().strip() == str(os.getpid()):
            lock.unlink()
    except OSError:
        pass
