"""Processes by pid, from /proc and signals (standard library only): the helpers of
`make run` (devtools/supervise.py), the tests, the experiments and the benchmarks.

`alive`, `children` and `group_members` read /proc, so no `ps` is needed. `stop_pid` stops a
process that leads its own process group by django-q2's rules (docs/design.md): SIGTERM to the
main pid only (a SIGTERM to the whole group can hang qcluster forever), wait, then SIGKILL the
whole group (a SIGKILL of the main pid alone leaves its children consuming the queue).
supervisor applies the same rules to what `make run` starts (devtools/supervise.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time


def alive(pid: int) -> bool:
    """Is `pid` running (a zombie counts as gone)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def children(pid: int) -> list[int]:
    """Direct children of `pid` that have not exited (zombies left out), from /proc."""
    return sorted(p for p, fields in _stats() if fields[1] == str(pid) and fields[0] != "Z")


def group_members(pgid: int) -> list[int]:
    """Processes of process group `pgid` that have not exited (zombies left out)."""
    return sorted(p for p, fields in _stats() if fields[2] == str(pgid) and fields[0] != "Z")


def _stats():
    """(pid, the fields of /proc/PID/stat after the command name) for every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        yield int(entry), stat.rsplit(")", 1)[-1].split()


def stop_pid(pid: int, *, grace: float, name: str = "process", wait=None) -> str:
    """SIGTERM `pid`, wait up to `grace` seconds, then SIGKILL its process group (the group
    whose id is `pid`: start processes with start_new_session=True).

    `wait(timeout)` may be given for a child process (Popen.wait), so it gets reaped.
    Returns how it ended: "terminated", "killed" or "gone".
    """

    def exited(timeout: float) -> bool:
        if wait is not None:
            try:
                wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid):
                return True
            time.sleep(0.1)
        return not alive(pid)

    # Every process started here leads its own session, so its group id is its pid; that
    # stays true after the main pid died, when its children may still be running.
    pgid = pid
    if not alive(pid):
        outcome = "gone"
        if wait is not None:
            exited(1)  # reap it
    else:
        os.kill(pid, signal.SIGTERM)
        if exited(grace):
            outcome = "terminated"
        else:
            print(f"{name} (pid {pid}) did not stop in {grace:.0f}s: SIGKILL to its group",
                  file=sys.stderr)
            outcome = "killed"
    # Whatever happened to the main pid, no child of its group may keep running.
    if pgid != os.getpgid(0):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    if outcome == "killed":
        exited(5)
    return outcome
