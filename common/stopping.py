"""Clean stops for long-running commands (`--follow`)."""

import signal
import time
from collections.abc import Callable
from types import FrameType

from pgbroker.connection import no_slot


class StopFlag:
    """Becomes true on SIGTERM or SIGINT: a loop checks it between units of work."""

    def __init__(self) -> None:
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

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
        if reason != self.reason:
            self.reason = reason
            text = " ".join(str(error).split()) or type(error).__name__
            self.say_error(f"{self.what} failed: {type(error).__name__}: {text}; trying again "
                           "until it works")

    def ok(self) -> None:
        if self.since is not None:
            self.say(f"{self.what} works again after {time.monotonic() - self.since:.1f} s "
                     f"({self.failures} failed tries)")
            self.since, self.failures, self.reason = None, 0, ""
