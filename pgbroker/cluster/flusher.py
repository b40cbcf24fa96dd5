"""The thread that writes finished jobs while the dispatcher goes on feeding workers."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import psycopg
from django_q.conf import logger

from pgbroker.cluster.writer import Outcome, Writer


class Flusher:
    """A thread that writes finished jobs (pgbroker.cluster.writer) while the dispatcher goes on
    feeding workers; everything that finished while the last batch was being written goes
    into the next one."""

    def __init__(self, writer: Writer, wake_fd: int) -> None:
        self.writer = writer
        self.wake_fd = wake_fd
        self.cond = threading.Condition()
        self.pending = Outcome()
        self.batch = Outcome()  # being written now
        self.writing = False
        self.stopping = False
        self.requeued = False  # retries were written: there is work no NOTIFY announces
        self.thread = threading.Thread(target=self._run, name="flusher", daemon=True)
        self.thread.start()

    def put(self, outcome: Outcome) -> None:
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
        with contextlib.suppress(psycopg.Error):  # the session reserved at start (Writer)
            self.writer.connect()
        while True:
            with self.cond:
                while not self.pending and not self.stopping:
                    self.cond.wait()
                if not self.pending:
                    return
                batch, self.pending = self.pending, Outcome()
                self.batch = batch
                self.writing = True
            failing_since = None
            while True:
                try:
                    self.writer.flush(batch)
                    break
                except psycopg.Error as e:
                    if failing_since is None:  # once per outage, not every try
                        failing_since = time.monotonic()
                        logger.error("writing %s finished job(s) failed, retrying: %s",
                                     len(batch.done) + len(batch.retry) + len(batch.park),
                                     (str(e).strip().splitlines() or [""])[0])
                    self.writer.close()
                    time.sleep(0.2)
            if failing_since is not None:
                logger.warning("wrote the finished jobs after %.1f s of trying",
                               time.monotonic() - failing_since)
            with self.cond:
                self.writing = False
                if batch.retry:
                    self.requeued = True
            if batch.retry:
                with contextlib.suppress(OSError):
                    os.write(self.wake_fd, b"r")
