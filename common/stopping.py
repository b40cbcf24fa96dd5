"""Clean stops for long-running commands (`--follow`), and how they are for probes.

`StopFlag` and `Outage` are what every `--follow` loop uses (the relay, the saga recoverer);
they also keep the process's status file (pgbroker.status) when settings.STATUS_FILE names one
for it (ops.programs): a thread writes it every second, ready once a pass has worked, not
ready while passes fail (`relay pass failing for 4 s: OperationalError: ...`) or once a stop
was asked. The thread, not the loop, writes it: a recovery pass may rightly take minutes, and
the process is alive all the while; it stops writing only when the process is stopped (a
SIGSTOP) or gone."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from django.conf import settings

from pgbroker.connection import no_slot
from pgbroker.status import EVERY, StatusFile, one_line


class Health:
    """This process's readiness, as its status file says it (one per process)."""

    def __init__(self) -> None:
        self.reason = "starting: no pass has worked yet"
        self.failing: tuple[str, float, str] | None = None  # what, since (monotonic), error
        self.thread: threading.Thread | None = None

    def now(self) -> str:
        """Why it is not ready ("" when it is)."""
        if self.failing is not None:
            what, since, error = self.failing
            return f"{what} failing for {time.monotonic() - since:.0f} s: {error}"
        return self.reason

    def start(self) -> None:
        """Write the status file from now on, every second (once per process)."""
        path = getattr(settings, "STATUS_FILE", "")
        if not path or self.thread is not None:
            return
        status = StatusFile(path, program=Path(path).stem)

        def beat() -> None:
            while True:
                why = self.now()
                with contextlib.suppress(Exception):  # never the reason a process dies
                    status.beat(ready=not why, reason=why)
                time.sleep(EVERY / 4)

        self.thread = threading.Thread(target=beat, name="status", daemon=True)
        self.thread.start()


health = Health()


class StopFlag:
    """Becomes true on SIGTERM or SIGINT: a loop checks it between units of work. Creating it
    starts the process's status file (Health)."""

    def __init__(self) -> None:
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        health.start()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        health.reason, health.failing = "stopping", None

    def __bool__(self) -> bool:
        return self.stopping


class Outage:
    """A `--follow` loop's failures, said in one line once per outage (and again only when
    the reason changes: the session ended, then no slot for a new one), and its end with how
    long it lasted: a database out of connection slots for ten minutes writes a few lines, not
    six hundred tracebacks."""

    def __init__(self, what: str, *, say_error: Callable[[str], object],
                 say: Callable[[str], object]) -> None:
        self.what = what
        self.say_error = say_error
        self.say = say
        self.since: float | None = None
        self.failures = 0
        self.reason = ""

    def failed(self, error: BaseException) -> None:
        self.failures += 1
        reason = "no slot" if no_slot(error) else type(error).__name__
        if self.since is None:
            self.since = time.monotonic()
        if health.reason != "stopping":
            health.failing = (self.what, self.since,
                              one_line(f"{type(error).__name__}: {error}", 200))
        if reason != self.reason:
            self.reason = reason
            text = " ".join(str(error).split()) or type(error).__name__
            self.say_error(f"{self.what} failed: {type(error).__name__}: {text}; trying again "
                           "until it works")

    def ok(self) -> None:
        if health.reason != "stopping":
            health.reason, health.failing = "", None
        if self.since is not None:
            self.say(f"{self.what} works again after {time.monotonic() - self.since:.1f} s "
                     f"({self.failures} failed tries)")
            self.since, self.failures, self.reason = None, 0, ""
