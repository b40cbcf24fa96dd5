"""A history of every attempt of every job, for checking afterwards what ran where and when
(what an experiment's checker reads: two attempts of one job overlapping in time, on any host).

Off unless settings.JOB_HISTORY_DIR is set. Each process appends one JSON line per event to
`<dir>/<host>.jsonl` with a single `write()` on a file opened with O_APPEND: lines of several
processes never mix, and nothing is buffered in the process, so a SIGKILL loses no line that
was written. The database is not used: the faults under test (partitions, restarts, ended
sessions) must not be able to lose the evidence.

Times: `t` is the kernel's CLOCK_MONOTONIC, which every process of one machine shares (the
lab's hosts are namespaces of one kernel), so times from every host compare. It is read with
the system call itself: libfaketime, which shifts a host's clock in experiments, shifts every
clock a process reads through the C library, the monotonic ones too. `wall` is for people.

Events: `start` (a worker begins an attempt), `end` (it finished: `ok`), `died` (the dispatcher
saw the worker of a running attempt die: killed, crashed, timed out, fenced).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from pgbroker.connection import host_name

CLOCK_MONOTONIC = 1
SYS_CLOCK_GETTIME = {"x86_64": 228, "aarch64": 113}.get(platform.machine())


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)


def monotonic() -> float:
    """CLOCK_MONOTONIC from the kernel, past any LD_PRELOAD (time.monotonic() elsewhere)."""
    if SYS_CLOCK_GETTIME is None:
        return time.monotonic()
    ts = _Timespec()
    if _libc.syscall(SYS_CLOCK_GETTIME, CLOCK_MONOTONIC, ctypes.byref(ts)) != 0:
        return time.monotonic()
    return float(ts.sec + ts.nsec / 1e9)


_fd: int | None = None
_path: Path | None = None
_pid = 0  # the process that opened _fd (a forked worker opens its own)


def directory() -> str:
    return getattr(settings, "JOB_HISTORY_DIR", "") or ""


def host() -> str:
    return host_name()


def record(event: str, job: str, **fields: Any) -> None:
    """Append one event; a no-op when the history is off."""
    global _fd, _path
    where = directory()
    if not where:
        return
    path = Path(where) / f"{host()}.jsonl"
    if _fd is None or _path != path or os.getpid() != _pid:
        _open(path)
    assert _fd is not None
    line = {"e": event, "job": job, "host": host(), "pid": os.getpid(),
            "t": monotonic(), "wall": time.time(), **fields}
    os.write(_fd, (json.dumps(line, default=str) + "\n").encode())


def _open(path: Path) -> None:
    global _fd, _path, _pid
    path.parent.mkdir(parents=True, exist_ok=True)
    _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _path, _pid = path, os.getpid()


def start(job: str, **fields: Any) -> None:
    if directory():
        record("start", job, ppid=os.getppid(), pgid=os.getpgid(0), **fields)


def read(where: str | Path) -> list[dict[str, Any]]:
    """Every event of every host's file, in time order (a torn last line is skipped)."""
    events = []
    for path in sorted(Path(where).glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return sorted(events, key=lambda e: e["t"])
