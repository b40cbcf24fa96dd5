"""The real processes an experiment runs, supervised: killed, they are started again, as a
production supervisor would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from devtools.processes import alive, children, stop_pid

BASE_DIR = Path(__file__).resolve().parent.parent


class Supervised:
    """One manage.py command in its own process group, logging to a file, restarted by
    `supervise()` when it is gone."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], log_dir: Path,
                 grace: float = 15.0, prefix: list[str] | None = None,
                 host: str = "") -> None:
        self.name, self.args, self.env, self.grace = name, args, env, grace
        self.prefix = prefix or []  # the lab's `ip netns exec HOST` (and faketime)
        self.host = host
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "manage.py", *self.args], cwd=BASE_DIR,
                env=self.env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and alive(self.proc.pid)

    def supervise(self) -> bool:
        """Start it again if it died; True if it had to."""
        if self.running():
            return False
        if self.proc is not None:
            # its group may still hold children (a SIGKILL of the main pid alone)
            stop_pid(self.proc.pid, grace=0.1, name=self.name, wait=self.proc.wait)
        self.restarts += 1
        self.start()
        return True

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, grace=self.grace, name=self.name, wait=self.proc.wait)

    def log_has(self, text: str) -> bool:
        try:
            return text in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    # --- what a kill can hit --------------------------------------------------------------

    def dispatcher(self) -> int | None:
        """The cluster's dispatcher: the main process's child."""
        found = children(self.proc.pid) if self.proc is not None and self.running() else []
        return found[0] if found else None

    def workers(self) -> list[int]:
        dispatcher = self.dispatcher()
        return children(dispatcher) if dispatcher else []

    def kill(self, what: str, rng) -> int | None:
        """SIGKILL the whole group ("cluster"/"process"), its dispatcher or one worker;
        returns the pid hit (None: nothing to hit right now)."""
        if self.proc is None or not self.running():
            return None
        if what == "dispatcher":
            pid = self.dispatcher()
        elif what == "worker":
            workers = self.workers()
            pid = rng.choice(workers) if workers else None
        else:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.pid
        if pid:
            os.kill(pid, signal.SIGKILL)
        return pid
