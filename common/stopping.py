"""Clean stops for long-running commands (`--follow`)."""

import signal


class StopFlag:
    """Becomes true on SIGTERM or SIGINT: a loop checks it between units of work."""

    def __init__(self) -> None:
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def __bool__(self) -> bool:
        return self.stopping
