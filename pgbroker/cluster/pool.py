"""The workers as the dispatcher sees them: a `Slot` per worker process, how one is started,
and django-q2's guard against a job that outlives its timeout."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext
from typing import Any

from django_q.conf import Conf, logger

from pgbroker.cluster.messages import Claimed
from pgbroker.cluster.worker import WorkerSetup, worker_main

PIPELINE = 2  # jobs in one worker's pipe: the running one and the next
PIPELINE_FAST = 8  # ... while the worker's last two jobs each took under FAST_JOB seconds
FAST_JOB = 0.01
PIPELINE_FASTEST = 32  # ... under FASTEST_JOB: the round trips to the database and back to
FASTEST_JOB = 0.001  # the dispatcher would otherwise cost more than the jobs themselves
# Behind the running job a pipe holds at most this many bytes of packages, well inside a
# socket's buffer: the dispatcher never blocks writing to a worker that is itself blocked
# writing a large result back (both would wait forever). A larger job waits for a free worker.
PIPELINE_MAX_BYTES = 32_768


def mp_context() -> ForkContext:
    return multiprocessing.get_context("fork")


def exit_description(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Slot:
    """One worker and the jobs in its pipe: the first is running, the next waits behind it
    so the worker never idles while its result travels back. While the worker's recent jobs
    are fast, a few more wait behind (a round trip per job would cost more than the job)."""

    number: int
    process: multiprocessing.process.BaseProcess
    conn: Connection
    timer: ctypes._SimpleCData[float]  # the worker's timer, read and written without its lock
    jobs: deque[Claimed] = field(default_factory=deque)
    since: float = 0.0  # wall clock: when the running job started, for the dashboard
    stopped: bool = False  # STOP sent
    lost: bool = False  # the worker lost the cluster's key: none of its jobs started
    fenced: bool = False  # killed by the fence (the database stopped answering)
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=2))  # last durations
    # The jobs at the front started together (pgbroker.batching): how many are left running,
    # the most their function takes at once, and the time the batch took.
    batch_left: int = 0
    batch_size: int = 0
    batch_took: float = 0.0

    @property
    def room(self) -> int:
        if self.stopped or not self.process.is_alive():
            return 0
        slowest = max(self.recent) if len(self.recent) == 2 else FAST_JOB
        depth = (PIPELINE_FASTEST if slowest < FASTEST_JOB
                 else PIPELINE_FAST if slowest < FAST_JOB else PIPELINE)
        if self.batch_size and slowest < FAST_JOB:  # a whole batch waits behind the running one
            depth = max(depth, 2 * self.batch_size)
        return max(0, depth - len(self.jobs))

    def kill(self) -> None:
        if self.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    @property
    def running(self) -> Claimed | None:
        return self.jobs[0] if self.jobs else None

    def describe(self) -> dict[str, Any]:
        """For the clusters' table: {pid, job (running), since, next (waiting behind)}."""
        return {"pid": self.process.pid, "job": self.running.id if self.running else None,
                "since": self.since if self.running else None,
                "next": [j.id for j in itertools.islice(self.jobs, 1, None)]}

    def keep_only(self, ours: set[int | str]) -> None:
        """After a reconnect: jobs taken back while the dispatcher was away are no longer
        this worker's; it may be running one, so it is stopped."""
        if any(j.id not in ours for j in self.jobs):
            logger.critical("jobs of worker %s were taken back while we were away: "
                            "stopping it", self.process.pid)
            self.jobs = deque(j for j in self.jobs if j.id in ours)
            self.kill()

    def takes(self, job: Claimed) -> bool:
        """May `job` go into this worker's pipe now (PIPELINE_MAX_BYTES)?"""
        if self.room <= 0:
            return False
        behind = sum(len(j.payload) for j in itertools.islice(self.jobs, 1, None))
        return not self.jobs or behind + len(job.payload) <= PIPELINE_MAX_BYTES


def spawn(number: int, *, setup: WorkerSetup, close_fds: Iterable[int]) -> Slot:
    """Start worker `number`; it closes `close_fds` (what the dispatcher holds) at once."""
    ours, theirs = mp_context().Pipe(duplex=True)
    timer = mp_context().Value("f", -1)
    process = mp_context().Process(
        target=worker_main, name=f"Worker-{number}",
        args=(theirs, timer, Conf.TIMEOUT, os.getpid(), list(close_fds), setup))
    process.daemon = Conf.DAEMONIZE_WORKERS
    process.start()
    theirs.close()
    return Slot(number=number, process=process, conn=ours, timer=timer.get_obj())


def guard(slots: Iterable[Slot], elapsed: float) -> None:
    """django-q2's guard: a worker still busy `timeout + 3` s after it started is killed
    (its own SIGALRM normally stops the task at `timeout`)."""
    for slot in slots:
        value = slot.timer.value
        if value > 0 and slot.process.is_alive():
            value -= elapsed
            slot.timer.value = max(value, 0.0)
            if value <= 0:
                slot.kill()
