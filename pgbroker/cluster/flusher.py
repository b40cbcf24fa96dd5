"""The thread that writes finished jobs while the dispatcher goes on feeding workers."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Generic, Protocol, TypeVar

import psycopg
from django_q.conf import logger

from pgbroker.cluster.lines import first_line


class Batch(Protocol):
    """What a flush writes (writer.Outcome, or a Redis source's)."""

    def __bool__(self) -> bool: ...
    def __len__(self) -> int: ...
    def ids(self) -> set[int | str]: ...
    def merge(self, other: Any) -> None: ...
    def requeues(self) -> bool: ...  # puts jobs back where no notification announces them


B = TypeVar("B", bound=Batch)
B_contra = TypeVar("B_contra", bound=Batch, contravariant=True)


class BatchWriter(Protocol[B_contra]):
    @property
    def conn(self) -> Any: ...  # its PostgreSQL session (the dispatcher's new workers close it)

    def connect(self) -> None: ...
    def flush(self, batch: B_contra) -> None: ...
    def close(self) -> None: ...


class Flusher(Generic[B]):
    """A thread that writes finished jobs (pgbroker.cluster.writer) while the dispatcher goes on
    feeding workers; everything that finished while the last batch was being written goes
    into the next one. `errors`: what a failed write raises (it is tried again)."""

    def __init__(self, writer: BatchWriter[B], wake_fd: int, *, new: type[B],
                 errors: tuple[type[Exception], ...] = (psycopg.Error,)) -> None:
        self.writer = writer
        self.wake_fd = wake_fd
        self.new = new
        self.errors = errors
        self.cond = threading.Condition()
        self.pending: B = new()
        self.batch: B = new()  # being written now
        self.writing = False
        self.stopping = False
        self.requeued = False  # retries were written: there is work no NOTIFY announces
        self.failing_since: float | None = None  # monotonic: the writes fail since then
        self.failure = ""  # the first line of the last failure
        self.thread = threading.Thread(target=self._run, name="flusher", daemon=True)
        self.thread.start()

    def put(self, outcome: B) -> None:
        with self.cond:
            self.pending.merge(outcome)
            self.cond.notify()

    def idle(self) -> bool:
        with self.cond:
            return not self.pending and not self.writing

    def ids(self) -> set[int | str]:
        """Jobs finished and not yet written."""
        with self.cond:
            return self.pending.ids() | (self.batch.ids() if self.writing else set())

    def take_requeued(self) -> bool:
        with self.cond:
            requeued, self.requeued = self.requeued, False
            return requeued

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout=30)
        self.writer.close()

    def _run(self) -> None:
        with contextlib.suppress(*self.errors):  # the session reserved at start (Writer)
            self.writer.connect()
        while True:
            with self.cond:
                while not self.pending and not self.stopping:
                    self.cond.wait()
                if not self.pending:
                    return
                batch, self.pending = self.pending, self.new()
                self.batch = batch
                self.writing = True
            while True:
                try:
                    self.writer.flush(batch)
                    break
                except self.errors as e:
                    self.failure = first_line(e)
                    if self.failing_since is None:  # once per outage, not every try
                        self.failing_since = time.monotonic()
                        logger.error("writing %s finished job(s) failed, retrying: %s",
                                     len(batch), self.failure)
                    self.writer.close()
                    time.sleep(0.2)
            if self.failing_since is not None:
                logger.warning("wrote the finished jobs after %.1f s of trying",
                               time.monotonic() - self.failing_since)
                self.failing_since = None
            requeues = batch.requeues()
            with self.cond:
                self.writing = False
                if requeues:
                    self.requeued = True
            if requeues:
                with contextlib.suppress(OSError):
                    os.write(self.wake_fd, b"r")

    def unready(self, now: float) -> str:
        """Why finished jobs cannot be written now ("" when they can)."""
        since = self.failing_since
        if since is None:
            return ""
        return f"cannot write finished jobs for {now - since:.0f} s: {self.failure}"
