"""Where a dispatcher's jobs come from and where their outcomes go: one interface, two kinds.

`PostgresSource` (pgbroker.cluster.postgres) claims from pgbroker's table with the cluster's
key, writes outcomes in batches, and takes back the jobs of dead clusters. `BrokerSource`
(here) drives any other django-q2 broker (`Q_BROKER=orm`, Redis) through its public
interface, as django-q2's own cluster does: dequeue, save the result, acknowledge.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue as stdqueue
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

from django import db
from django_q.brokers import Broker
from django_q.conf import Conf, logger
from django_q.monitor import save_cached, save_task

from pgbroker.cluster.lines import first_line, last_line
from pgbroker.cluster.messages import Claimed, Done
from pgbroker.cluster.pool import Slot
from pgbroker.cluster.worker import WorkerSetup
from pgbroker.connection import host_name

HANDED_BACK = "handed back unstarted: the cluster stopped"
PUBLISH_EVERY = 1.0
STAT_TTL = 3  # seconds a published stat lives unless renewed


def save(task: dict[str, Any], broker: Broker) -> None:
    """A finished task sent whole: saved as django-q2's monitor saves it (a cached result to
    the cache, with async_iter's and groups' bookkeeping; else the database; chains go on)."""
    (save_cached if task.get("cached") else save_task)(task, broker)


class Workers(Protocol):
    """What a source may ask of its dispatcher."""

    stopping: bool
    slots_lock: threading.Lock

    @property
    def slots(self) -> list[Slot]: ...

    def held_ids(self) -> list[int | str]: ...  # jobs buffered or in a worker's pipe

    # [{pid, job, since, next}] per worker, and one for the buffer
    def snapshot(self) -> list[dict[str, Any]]: ...

    def keep_only(self, ours: set[int | str]) -> None: ...  # drop (and stop) jobs no longer ours


class JobSource:
    """The interface; the defaults suit a source with nothing to do there."""

    setup: WorkerSetup = WorkerSetup()

    def start(self, *, pid: int) -> None:
        """The dispatcher is about to spawn its workers (and begins right after)."""

    def started(self) -> None:
        """The workers exist."""

    def stop(self) -> None:
        raise NotImplementedError

    def up(self) -> bool:
        """May jobs be dispatched now?"""
        return True

    def unready(self, now: float) -> str:
        """Why jobs cannot be taken or settled now, in one line; "" when they can (the
        cluster's status file, pgbroker.status)."""
        return ""

    def due(self, now: float) -> bool:
        """Is there something to take now (the dispatcher has room and an empty buffer)?"""
        raise NotImplementedError

    def deadline(self) -> float | None:
        """When to look again if no event comes (monotonic)."""
        return None

    def wait_objects(self) -> list[Any]:
        """More to wait on while the dispatcher has room (a socket that brings NOTIFYs)."""
        return []

    def after_wait(self, ready: list[Any]) -> None:
        """The wait returned `ready`."""

    def take(self, room: int) -> list[Claimed]:
        raise NotImplementedError

    def dispatched(self) -> None:
        """What `take` returned is in the workers' pipes."""

    def finished(self, job: Claimed | None, done: Done) -> None:
        raise NotImplementedError

    def died(self, job: Claimed, why: str) -> None:
        """The job's worker died while running it."""
        raise NotImplementedError

    def hand_back(self, job: Claimed, *, give_back: int, why: str = HANDED_BACK) -> None:
        """The job never started: back to the queue, `give_back` attempts returned."""

    def bad_package(self, job_id: int | str, error: str) -> None:
        raise NotImplementedError

    def no_slot(self, job_id: int | str, error: str) -> None:
        """The job's worker had no database connection slot: it did not start."""

    def flush(self) -> None:
        """The end of a loop turn: write what finished."""

    def tick(self, now: float) -> None:
        """Housekeeping, every pgbroker.timing.TICK."""
        raise NotImplementedError

    def settled(self) -> bool:
        """Stopping: is everything the workers finished written?"""
        return True

    def drained(self) -> bool:
        """Has the source looked, since the last job it gave, and found nothing due?"""
        raise NotImplementedError

    def fds(self) -> Iterable[int]:
        """File descriptors a new worker must close (the dispatcher's sessions)."""
        return ()


class BrokerSource(JobSource):
    """Any other django-q2 broker: its dequeue() runs in a thread (it may sleep `poll`),
    feeding a small buffer; results are saved and acknowledged the stock way. Delivery after
    a crash is the broker's own (the ORM broker's lease; Redis has none)."""

    def __init__(self, broker: Broker, *, wake_fd: int, workers: Workers) -> None:
        self.broker = broker
        self.buffer: stdqueue.Queue[Claimed] = stdqueue.Queue(
            maxsize=max(Conf.QUEUE_LIMIT or 1, 1))
        self.stop_event = threading.Event()
        self.wake_fd = wake_fd
        self.workers = workers
        self.next_publish = 0.0
        self.empty = False  # the last dequeue brought nothing
        self.thread = threading.Thread(target=self._pull, name="dequeue", daemon=True)

    def start(self, *, pid: int) -> None:
        self.thread.start()

    def _pull(self) -> None:
        while not self.stop_event.is_set():
            try:
                tasks = self.broker.dequeue()
            except Exception as e:  # the broker is down (Redis stopped): say so, once a second
                logger.warning("cannot take jobs from the broker: %s; trying again in 1 s",
                               first_line(e, named=True))
                time.sleep(1)
                continue
            self.empty = not tasks
            for ack_id, package in tasks or ():
                while not self.stop_event.is_set():
                    try:
                        self.buffer.put(Claimed(ack_id, package, 0), timeout=0.2)
                        break
                    except stdqueue.Full:
                        continue
                with contextlib.suppress(OSError):
                    os.write(self.wake_fd, b"j")
        db.connections.close_all()

    def stop(self) -> None:
        self.stop_event.set()

    def due(self, now: float) -> bool:
        return not self.buffer.empty()

    def drained(self) -> bool:
        return self.empty and self.buffer.empty()

    def take(self, room: int) -> list[Claimed]:
        jobs: list[Claimed] = []
        with contextlib.suppress(stdqueue.Empty):
            while len(jobs) < room:
                jobs.append(self.buffer.get_nowait())
        return jobs

    def finished(self, job: Claimed | None, done: Done) -> None:
        task = done.task or {}  # a broker's workers send every task whole
        save(task, self.broker)  # at max_attempts, save_task acknowledges (the ORM's way)
        if not done.success:
            logger.warning("job %s failed: %s", task.get("name"), last_line(task.get("result")))
        if done.ack:
            self.broker.acknowledge(done.job_id)

    def died(self, job: Claimed, why: str) -> None:
        pass  # the broker's lease brings it back

    def bad_package(self, job_id: int | str, error: str) -> None:
        logger.error("Failed to push task to queue: %s", error)
        self.broker.fail(job_id)

    def tick(self, now: float) -> None:
        if now < self.next_publish:
            return
        self.next_publish = now + PUBLISH_EVERY
        publish_stat(self.broker, workers=self.workers, buffered=self.buffer.qsize())


def publish_stat(broker: Broker, *, workers: Workers, buffered: int) -> None:
    """Say who we are through the broker's stat keys, as django-q2's sentinel does, expiring
    unless renewed (`<Q_STAT>:<cluster name>:<host>:<pid>`)."""
    stat = {"host": host_name(), "pid": os.getpid(), "cluster": Conf.CLUSTER_NAME,
            "workers": workers.snapshot()[:-1], "buffered": buffered, "at": time.time()}
    try:
        broker.set_stat(f"{Conf.Q_STAT}:{Conf.CLUSTER_NAME}:{host_name()}:{os.getpid()}",
                        json.dumps(stat), STAT_TTL)
    except Exception as e:  # the broker is down: the stat expires, which says so
        logger.debug("could not publish the cluster's stat: %s", e)
