"""The job source of a reliable Redis broker (pgbroker.reliable_redis): jobs taken by moving
them into this cluster's in-flight list, results committed to PostgreSQL and the jobs then
removed from Redis in batches, and the liveness of every cluster on the same queue.

Three threads beside the dispatcher's loop, each with its own Redis connection:

- the **keeper** renews this cluster's key every RENEW seconds and, every SWEEP, moves the
  in-flight jobs of clusters whose key has expired back to the queue;
- the **waiter** blocks in `BLMOVE` while the queue is empty and the dispatcher has room, so a
  new job wakes the loop at once (Redis has no NOTIFY a producer would not have to send);
- the **flusher** writes finished jobs: their result rows in one PostgreSQL statement (a
  synchronous commit: the row is durable before the job leaves Redis), then one Redis round
  trip that removes them from the in-flight list;

and the **fence** (pgbroker.cluster.liveness) stops busy workers when the key could not be
renewed for FENCE seconds, before it can expire and another cluster take their jobs back.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis
from django.utils import timezone
from django_q.conf import Conf, logger
from django_q.signing import BadSignature

from pgbroker import history
from pgbroker.broker import alias
from pgbroker.cluster.flusher import Flusher
from pgbroker.cluster.lines import first_line, last_line
from pgbroker.cluster.liveness import Fence
from pgbroker.cluster.messages import Claimed, Done
from pgbroker.cluster.sources import (
    PUBLISH_EVERY,
    JobSource,
    Workers,
    publish_stat,
    save,
)
from pgbroker.cluster.worker import PackageReader, WorkerSetup, task_row
from pgbroker.cluster.writer import Outcome, Writer
from pgbroker.connection import host_name
from pgbroker.reliable_redis import FENCE, RENEW, SWEEP, WAIT, RedisFetch, ReliableRedis

GAVE_UP = "gave up: {attempts} worker(s) died running it; the last: {last}"
WRITER_NAME = "pgbroker redis-writer"  # its session's application_name
# How often the cluster compares its in-flight list with what it holds: a take whose answer
# was lost (the connection broke after Redis ran it) leaves jobs in the list that nobody runs
# while the cluster lives. Seen unknown twice, this far apart, they go back to the queue.
ORPHAN_CHECK = 2.0
RETRY_AFTER = 1.0  # seconds between tries to take jobs while Redis is down


@dataclass
class RedisOutcome:
    """What one flush writes: result rows (PostgreSQL), then the in-flight list's changes."""

    results: list[bytes] = field(default_factory=list)  # django_q_task rows, COPY lines
    done: list[bytes] = field(default_factory=list)  # recorded: out of the in-flight list
    back: list[bytes] = field(default_factory=list)  # never started: back to the queue
    died: list[bytes] = field(default_factory=list)  # its worker died: back, an attempt counted
    park: list[tuple[bytes, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.results or self.done or self.back or self.died or self.park)

    def __len__(self) -> int:
        return len(self.done) + len(self.back) + len(self.died) + len(self.park)

    def ids(self) -> set[int | str]:
        return set()

    def merge(self, other: RedisOutcome) -> None:
        self.results += other.results
        self.done += other.done
        self.back += other.back
        self.died += other.died
        self.park += other.park

    def requeues(self) -> bool:
        return False  # the waiter's BLMOVE sees what goes back to the queue

    def packages(self) -> set[bytes]:
        return {*self.done, *self.back, *self.died, *(p for p, _ in self.park)}


class RedisWriter:
    """Result rows first, committed (synchronously), then Redis: a job leaves the in-flight
    list only once its result is recorded. A batch whose Redis part failed is tried again
    without its rows (already committed)."""

    def __init__(self, *, fetch: RedisFetch) -> None:
        self.rows = Writer(alias=alias(), owner=0, synchronous=True, name=WRITER_NAME)
        self.fetch = fetch

    @property
    def conn(self) -> Any:
        return self.rows.conn

    def connect(self) -> None:
        self.rows.connect()

    def flush(self, batch: RedisOutcome) -> None:
        if batch.results:
            self.rows.flush(Outcome(results=batch.results))
            batch.results = []
        self.fetch.settle(acked=batch.done, back=batch.back, died=batch.died, parked=batch.park)

    def close(self) -> None:
        self.rows.close()


class Keeper(threading.Thread):
    """Renews this cluster's key and sweeps the dead ones' jobs back to the queue. `alive_at`
    (shared with the workers: they start a job, or go on after a SIGSTOP, only while it is
    recent) is the last renewal, and is not moved on after one that found our jobs moved back
    until the dispatcher has dropped them (`resume`)."""

    def __init__(self, *, fetch: RedisFetch, stop: threading.Event) -> None:
        super().__init__(name="keeper", daemon=True)
        self.fetch = fetch
        self.stop = stop
        self.alive_at = multiprocessing.RawValue("d", time.monotonic())
        self.swept = threading.Event()  # another cluster moved our in-flight jobs back
        self.down_since: float | None = None
        self.next_sweep = 0.0
        self.who = f"{host_name()}:{os.getpid()}"

    @property
    def last_ok(self) -> float:
        return float(self.alive_at.value)

    def register(self) -> None:
        self.fetch.renew(self.who)
        self.alive_at.value = time.monotonic()

    def resume(self) -> None:
        """The jobs moved back are dropped: this cluster may run jobs again."""
        self.swept.clear()
        self.alive_at.value = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(RENEW):
            try:
                now = time.monotonic()
                if self.fetch.renew(self.who) < 0:
                    self.swept.set()
                if not self.swept.is_set():
                    self.alive_at.value = now
                now = time.monotonic()
                if now >= self.next_sweep:
                    self.next_sweep = now + SWEEP
                    for owner, n in self.fetch.sweep().items():
                        logger.warning("moved %s in-flight job(s) of dead cluster %s back to "
                                       "the queue", n, owner)
                        history.record("took_back", "", owner=owner, jobs=n)
            except redis.RedisError as e:
                if self.down_since is None:  # once per outage
                    self.down_since = time.monotonic()
                    logger.error("cannot renew this cluster's key in Redis: %s",
                                 first_line(e, named=True))
                continue
            if self.down_since is not None:
                logger.warning("Redis back after %.1f s", time.monotonic() - self.down_since)
                self.down_since = None


class Waiter(threading.Thread):
    """While the queue is empty and the dispatcher has room (`want` set), blocks in BLMOVE;
    a job that comes is already in our in-flight list when it wakes the loop."""

    def __init__(self, *, fetch: RedisFetch, stop: threading.Event, wake_fd: int) -> None:
        super().__init__(name="waiter", daemon=True)
        self.fetch = fetch
        self.stop = stop
        self.wake_fd = wake_fd
        self.want = threading.Event()
        self.lock = threading.Lock()
        self.arrived: list[bytes] = []

    def take_arrived(self) -> list[bytes]:
        with self.lock:
            arrived, self.arrived = self.arrived, []
        return arrived

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.want.wait(0.2):
                continue
            try:
                item = self.fetch.wait_one(WAIT)
            except redis.RedisError as e:  # the loop says so when it takes
                logger.debug("waiting for a job: %s", e)
                self.stop.wait(RETRY_AFTER)
                continue
            if item is None:
                continue
            with self.lock:
                self.arrived.append(item)
            self.want.clear()
            with contextlib.suppress(OSError):
                os.write(self.wake_fd, b"j")


class RedisSource(JobSource):
    def __init__(self, broker: ReliableRedis, *, wake_fd: int, workers: Workers) -> None:
        self.broker = broker
        self.workers = workers
        self.owner = random.getrandbits(62) + 1
        self.fetch = broker.fetch(self.owner)
        self.stopping = threading.Event()
        self.keeper = Keeper(fetch=self.fetch.with_connection(broker.get_connection()),
                             stop=self.stopping)
        self.setup = WorkerSetup(rows=True, alive_at=self.keeper.alive_at, alive_for=FENCE)
        self.waiter = Waiter(fetch=self.fetch.with_connection(broker.get_connection()),
                             stop=self.stopping, wake_fd=wake_fd)
        writer = RedisWriter(fetch=self.fetch.with_connection(broker.get_connection()))
        self.flusher = Flusher(writer, wake_fd, new=RedisOutcome,
                               errors=(redis.RedisError, psycopg.Error))
        self.fence: Fence | None = None
        self.outcome = RedisOutcome()
        self.held: dict[int | str, bytes] = {}  # our ids of the jobs in hand: their packages
        self.next_id = 0
        self.asleep = False  # the last take found the queue empty: the waiter watches it
        self.down_since: float | None = None
        self.retry_at = 0.0
        self.next_publish = 0.0
        self.next_orphan_check = 0.0
        self.suspects: set[bytes] = set()  # in our list, unknown here, at the last check
        self.packages = PackageReader()

    # --- life cycle -----------------------------------------------------------------------

    def start(self, *, pid: int) -> None:
        self.keeper.register()
        self.keeper.start()
        self.waiter.start()

    def started(self) -> None:
        self.fence = Fence(last_ok=lambda: self.keeper.last_ok, seconds=FENCE,
                           workers=self.workers, what="Redis", prefix="")
        self.fence.start()

    def stop(self) -> None:
        self.stopping.set()
        self.flusher.stop()
        self.waiter.join(timeout=WAIT + 5)
        self.keeper.join(timeout=5)
        try:
            if n := self.fetch.leave():
                logger.info("handed %s unfinished job(s) back to the queue", n)
        except redis.RedisError as e:
            logger.error("could not hand the unfinished jobs back (%s): another cluster will, "
                         "once this cluster's key expires", first_line(e, named=True))

    def settled(self) -> bool:
        return self.flusher.idle()

    def drained(self) -> bool:
        return self.asleep and not self.waiter.arrived and not self.outcome \
            and self.flusher.idle()

    def fds(self) -> list[int]:
        conn = self.flusher.writer.conn
        return [conn.fileno()] if conn is not None and not conn.closed else []

    def unready(self, now: float) -> str:
        since = min((t for t in (self.keeper.down_since, self.down_since) if t is not None),
                    default=None)
        if since is not None:
            return f"no Redis for {now - since:.0f} s"
        return self.flusher.unready(now)

    # --- taking ---------------------------------------------------------------------------

    def up(self) -> bool:
        """May jobs go to workers now? Not while this cluster has not proved alive recently
        (its key may expire, and its jobs go to another cluster): the workers would refuse
        them anyway."""
        return bool(self.setup.alive())

    def due(self, now: float) -> bool:
        if self.down_since is not None and now < self.retry_at:
            return False
        return not self.asleep or bool(self.waiter.arrived)

    def deadline(self) -> float | None:
        return self.retry_at if self.down_since is not None else None

    def take(self, room: int) -> list[Claimed]:
        want = max(room, min(Conf.BULK, room + (Conf.QUEUE_LIMIT or 0)))
        arrived = self.waiter.take_arrived()
        try:
            items = list(zip(arrived, self.fetch.attempts_of(arrived), strict=True))
            asked = want - len(items)
            if asked > 0:
                taken = self.fetch.take(asked)
                items += taken
                self.asleep = len(taken) < asked
                if self.asleep:
                    self.waiter.want.set()
        except redis.RedisError as e:
            with self.waiter.lock:  # in our in-flight list already: taken next time
                self.waiter.arrived[:0] = arrived
            self._down(e)
            return []
        if self.down_since is not None:
            logger.warning("taking jobs from Redis again after %.1f s",
                           time.monotonic() - self.down_since)
            self.down_since = None
        now = time.monotonic()
        jobs = []
        for package, killed in items:
            self.next_id += 1
            self.held[self.next_id] = package
            job = Claimed(self.next_id, package, killed + 1, claimed_t=now)
            if Conf.MAX_ATTEMPTS > 0 and killed >= Conf.MAX_ATTEMPTS:
                self._park(job, GAVE_UP.format(attempts=killed, last="(not kept)"))
            else:
                jobs.append(job)
        return jobs

    def _down(self, error: Exception) -> None:
        now = time.monotonic()
        self.retry_at = now + RETRY_AFTER
        if self.down_since is None:
            self.down_since = now
            logger.error("cannot take jobs from Redis: %s; trying again every %.0f s",
                         first_line(error, named=True), RETRY_AFTER)

    # --- outcomes -------------------------------------------------------------------------

    def finished(self, job: Claimed | None, done: Done) -> None:
        package = self.held.pop(done.job_id, None)
        if done.task is not None:
            done.task.pop("ack_id", None)
            save(done.task, self.broker)
        if done.row is not None:
            self.outcome.results.append(done.row)
        if package is not None:  # recorded, failed or not: the Redis broker has no retries
            self.outcome.done.append(package)
        if not done.success:
            logger.warning("job %s failed: %s", done.job_id, last_line(done.error))

    def died(self, job: Claimed, why: str) -> None:
        if Conf.MAX_ATTEMPTS > 0 and job.attempts >= Conf.MAX_ATTEMPTS:
            self._park(job, GAVE_UP.format(attempts=job.attempts, last=why))
            return
        package = self.held.pop(job.id, None)
        if package is not None:
            self.outcome.died.append(package)

    def hand_back(self, job: Claimed, *, give_back: int, why: str = "") -> None:
        package = self.held.pop(job.id, None)
        if package is not None:
            self.outcome.back.append(package)

    def no_slot(self, job_id: int | str, error: str) -> None:
        package = self.held.pop(job_id, None)
        if package is not None:
            self.outcome.back.append(package)

    def bad_package(self, job_id: int | str, error: str) -> None:
        package = self.held.pop(job_id, None)
        logger.error("job %s parked: %s", job_id, error)
        if package is not None:
            self.outcome.park.append((package, error))

    def _park(self, job: Claimed, why: str) -> None:
        """Kept in the parked list, with a failed result row saying why."""
        package = self.held.pop(job.id, None)
        if package is None:
            return
        self.outcome.park.append((package, why))
        try:
            task = self.packages.loads(package)
        except (TypeError, BadSignature):
            return
        now = timezone.now()
        task.update(result=why, started=now, stopped=now, cluster=Conf.CLUSTER_NAME)
        self.outcome.results.append(task_row(task, success=False))
        logger.error("job %s (%s) parked: %s", job.id, task.get("name"), last_line(why))

    def flush(self) -> None:
        if self.outcome:
            self.flusher.put(self.outcome)
            self.outcome = RedisOutcome()

    # --- housekeeping ---------------------------------------------------------------------

    def tick(self, now: float) -> None:
        for thread in (self.flusher.thread, self.keeper, self.waiter, self.fence):
            if thread is not None and not thread.is_alive() and not self.workers.stopping:
                raise RuntimeError(f"the dispatcher's {thread.name} thread died")
        if self.keeper.swept.is_set():
            self._swept()
        if now >= self.next_orphan_check:
            self.next_orphan_check = now + ORPHAN_CHECK
            self._orphans()
        if now >= self.next_publish:
            self.next_publish = now + PUBLISH_EVERY
            publish_stat(self.broker, workers=self.workers, buffered=0)

    def _orphans(self) -> None:
        """Jobs in our in-flight list that this cluster does not hold (a take whose answer was
        lost with its connection): back to the queue, once seen twice, ORPHAN_CHECK apart (a
        job the waiter has just moved is in hand long before that)."""
        try:
            mine = self.fetch.mine()
        except redis.RedisError:
            return
        with self.flusher.cond:
            settling = self.flusher.pending.packages() | self.flusher.batch.packages()
        with self.waiter.lock:
            arrived = set(self.waiter.arrived)
        unknown = mine - set(self.held.values()) - arrived - settling - self.outcome.packages()
        orphans = unknown & self.suspects
        self.suspects = unknown - orphans
        if orphans:
            logger.warning("%s job(s) in this cluster's in-flight list were held by nobody (a "
                           "take whose answer was lost): back to the queue", len(orphans))
            self.outcome.back.extend(orphans)

    def _swept(self) -> None:
        """Another cluster took us for dead and moved our in-flight jobs back to the queue:
        the jobs in hand that are no longer in our list are not ours to run."""
        try:
            mine = self.fetch.mine()
        except redis.RedisError as e:
            logger.debug("reading our in-flight list: %s", e)
            return
        ours = {i for i, package in self.held.items() if package in mine}
        gone = set(self.held) - ours
        if gone:
            logger.critical("this cluster was taken for dead and its %s job(s) in hand were "
                            "moved back to the queue: dropping them here", len(gone))
            self.workers.keep_only(ours)
            for i in gone:
                del self.held[i]
        self.keeper.resume()
