"""Start and stop the project's background processes by pid (standard library only).

`make run` starts the web server, the two django-q2 clusters (PostgreSQL, and Redis in
Sidekiq's role), the outbox relay and the saga recoverer; `make stop` stops them. Each runs
in its own session (process group), logs to var/log/NAME.log and has its pid in
var/run/NAME.pid.

Stopping follows docs/design.md (django-q2 behaviour): SIGTERM to the main pid only (a
SIGTERM to the whole group can hang qcluster forever), wait, then SIGKILL the whole group as a
fallback (a SIGKILL of the main pid alone leaves its children consuming the queue).

`alive`, `children` and `stop_pid` are also the process helpers of the tests, the
experiments and the benchmarks.

    python3 devtools/processes.py start|stop|status
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = BASE_DIR / "var" / "run"
LOG_DIR = BASE_DIR / "var" / "log"
PYTHON = str(BASE_DIR / ".venv" / "bin" / "python")
HOST_PORT = os.environ.get("RUN_ADDR", "127.0.0.1:8000")

PROCESSES: dict[str, list[str]] = {
    "web": [PYTHON, "manage.py", "runserver", HOST_PORT, "--noreload"],
    "qcluster": [PYTHON, "manage.py", "qcluster"],
    "qcluster-redis": [PYTHON, "manage.py", "qcluster"],
    "relay": [PYTHON, "manage.py", "relay_outbox", "--follow"],
    "recoverer": [PYTHON, "manage.py", "recover_sagas", "--follow"],
}
# django-q2's own multi-cluster setting picks the Redis cluster's configuration (settings.py).
PROCESS_ENV: dict[str, dict[str, str]] = {"qcluster-redis": {"Q_CLUSTER_NAME": "redis"}}
GRACE_SECONDS = {"qcluster": 45.0, "qcluster-redis": 45.0}
# Demo timing: a 10 s task timeout gives a 40 s lease, so a failed or crashed job comes back
# within a minute instead of two. Set Q_TIMEOUT yourself to override.
DEMO_ENV = {"Q_TIMEOUT": os.environ.get("Q_TIMEOUT", "10"),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO")}
DEFAULT_GRACE = 10.0


def alive(pid: int) -> bool:
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


def pidfile(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def read_pid(name: str) -> int | None:
    try:
        return int(pidfile(name).read_text().strip())
    except (OSError, ValueError):
        return None


def start(names: list[str]) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for name in names:
        pid = read_pid(name)
        if pid and alive(pid):
            print(f"{name:<14} already running (pid {pid})")
            continue
        with open(LOG_DIR / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                PROCESSES[name], cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, **DEMO_ENV, **PROCESS_ENV.get(name, {})},
            )
        pidfile(name).write_text(str(proc.pid))
        print(f"{name:<14} started (pid {proc.pid}, log var/log/{name}.log)")
    time.sleep(1.5)
    for name in names:
        pid = read_pid(name)
        if not (pid and alive(pid)):
            print(f"{name} exited at once; see var/log/{name}.log", file=sys.stderr)
            sys.exit(1)


def stop(names: list[str]) -> None:
    for name in reversed(names):
        pid = read_pid(name)
        if pid is None:
            continue
        outcome = stop_pid(pid, grace=GRACE_SECONDS.get(name, DEFAULT_GRACE), name=name)
        print(f"{name:<14} {outcome} (pid {pid})")
        pidfile(name).unlink(missing_ok=True)


def status(names: list[str]) -> int:
    running = 0
    for name in names:
        pid = read_pid(name)
        up = bool(pid and alive(pid))
        running += up
        print(f"{name:<14} {f'running (pid {pid})' if up else 'stopped'}")
    return 0 if running == len(names) else 3


def main(argv: list[str]) -> int:
    verb = argv[0] if argv else ""
    names = argv[1:] or list(PROCESSES)
    unknown = [n for n in names if n not in PROCESSES]
    if unknown or verb not in {"start", "stop", "status"}:
        print(__doc__)
        return 2
    if verb == "start":
        start(names)
    elif verb == "stop":
        stop(names)
    else:
        return status(names)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
