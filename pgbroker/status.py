"""A long-running process's health in a small file, for probes: is it alive, is it ready?

The process rewrites the file (JSON) about once a second, and at once when its readiness
changes:

    {"program": "qcluster", "pid": 4242, "writer": 4250, "at": 1767000000.25,
     "ready": false, "reason": "no database for 4 s: ..."}

`pid` is the process a supervisor started (for a cluster: `manage.py qcluster`'s main
process, not its dispatcher, which writes the file as `writer`). A probe on the same host
(supervisord, a systemd timer, a container's exec probe) reads it with `verdict()`:

- **live**: the file exists, `pid` is running, and the last write is at most `stale` seconds
  old (a process that is stopped, or whose loop stands still, stops writing);
- **ready**: live, and the process says it can do its work now (`ready`), else `reason` says
  why not, in one line.

The cluster's dispatcher writes it when `PGBROKER_STATUS_FILE` names a path (pgbroker's
README). Standard library only: `python -m pgbroker.status FILE [--ready]` answers in a few
milliseconds, without starting Django (exit status 0: live, or ready with --ready; 1: not).
The file is replaced atomically (written beside it, then renamed): a reader never sees half
of one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVERY = 1.0  # seconds between two writes while nothing changes
STALE = 30.0  # a probe's default: a status this old is a process that stopped working
REASON_MAX = 300  # characters of a reason kept (one line)


def one_line(text: str, limit: int = REASON_MAX) -> str:
    """`text` on one line (whitespace runs become one space), at most `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass(frozen=True)
class Status:
    program: str
    pid: int  # the process a supervisor watches
    at: float  # wall-clock time of the write (time.time())
    ready: bool
    reason: str = ""  # why it is not ready
    writer: int = 0  # the process that wrote it (the dispatcher for a cluster)

    def as_dict(self) -> dict[str, Any]:
        return {"program": self.program, "pid": self.pid, "writer": self.writer,
                "at": self.at, "ready": self.ready, "reason": self.reason}


class StatusFile:
    """The writing side: `beat()` as often as you like; the file is written when `every`
    seconds passed since the last write, or when readiness or its reason changed."""

    def __init__(self, path: str | os.PathLike[str], *, program: str, pid: int | None = None,
                 every: float = EVERY) -> None:
        self.path = Path(path)
        self.program = program
        self.pid = os.getpid() if pid is None else pid
        self.every = every
        self.last_write = 0.0  # monotonic
        self.last: tuple[bool, str] | None = None
        self.failed = False  # a write failed (said once)

    def beat(self, *, ready: bool, reason: str = "", force: bool = False) -> bool:
        """Write the status if it is due or changed; True when it was written."""
        reason = "" if ready else one_line(reason or "not ready")
        now = time.monotonic()
        if not force and self.last == (ready, reason) and now - self.last_write < self.every:
            return False
        self.last, self.last_write = (ready, reason), now
        status = Status(program=self.program, pid=self.pid, at=time.time(), ready=ready,
                        reason=reason, writer=os.getpid())
        try:
            write(self.path, status)
        except OSError as e:  # a full disk must not stop the process: the probe says stale
            if not self.failed:
                self.failed = True
                print(f"cannot write the status file {self.path}: {e}", file=sys.stderr)
            return False
        self.failed = False
        return True


def write(path: Path, status: Status) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(status.as_dict()))
    os.replace(partial, path)


class Unreadable(Exception):
    """The file is missing or is not a status (the message is one line)."""


def read(path: str | os.PathLike[str]) -> Status:
    try:
        data = json.loads(Path(path).read_text())
        return Status(program=str(data["program"]), pid=int(data["pid"]),
                      at=float(data["at"]), ready=bool(data["ready"]),
                      reason=str(data.get("reason", "")), writer=int(data.get("writer", 0)))
    except FileNotFoundError:
        raise Unreadable(f"no status file {path}: the process has not started (or writes "
                         "its status elsewhere)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Unreadable(f"the status file {path} is unreadable: {one_line(str(e), 120)}") \
            from None


def running(pid: int) -> bool:
    """Is `pid` a running process (a zombie, dead and not yet reaped, is not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    return True


@dataclass(frozen=True)
class Verdict:
    live: bool
    ready: bool
    reason: str  # why not live, or not ready; "" when ready
    status: Status | None = None
    age: float | None = None  # seconds since the last write

    def line(self, name: str) -> str:
        """One line for a person: `relay: ready (pid 4242, written 0.4 s ago)`."""
        where = ""
        if self.status is not None and self.age is not None:
            where = f" (pid {self.status.pid}, written {self.age:.1f} s ago)"
        if self.ready:
            return f"{name}: ready{where}"
        if self.live:
            return f"{name}: live, not ready: {self.reason}{where}"
        return f"{name}: not live: {self.reason}"


def verdict(path: str | os.PathLike[str], *, stale: float = STALE,
            now: float | None = None) -> Verdict:
    try:
        status = read(path)
    except Unreadable as e:
        return Verdict(live=False, ready=False, reason=str(e))
    age = max(0.0, (time.time() if now is None else now) - status.at)
    if not running(status.pid):
        last = f" (it said: {status.reason})" if status.reason else ""
        return Verdict(live=False, ready=False, reason=f"pid {status.pid} is not running{last}",
                       status=status, age=age)
    if age > stale:
        return Verdict(live=False, ready=False, status=status, age=age,
                       reason=f"no status written for {age:.0f} s (pid {status.pid} is "
                              f"stopped or stuck; --stale {stale:g})")
    return Verdict(live=True, ready=status.ready, reason=status.reason, status=status, age=age)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pgbroker.status",
        description="Probe a process by its status file: exit 0 when it is live (with "
                    "--ready: ready), 1 when not, printing one line that says why.")
    parser.add_argument("file", help="the status file (PGBROKER_STATUS_FILE for a cluster)")
    parser.add_argument("--ready", action="store_true",
                        help="ask whether it is ready to work (default: whether it is live)")
    parser.add_argument("--stale", type=float, default=STALE, metavar="SECONDS",
                        help=f"a status older than this is a process that stopped working "
                             f"(default {STALE:g} s)")
    args = parser.parse_args(argv)
    if not 0 < args.stale < 86_400:
        parser.error("--stale must be a number of seconds above 0 and below 86,400")
    found = verdict(args.file, stale=args.stale)
    print(found.line(Path(args.file).stem))
    return 0 if (found.ready if args.ready else found.live) else 1


if __name__ == "__main__":
    sys.exit(main())
