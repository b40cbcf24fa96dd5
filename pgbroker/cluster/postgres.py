"""The job source of pgbroker's own table: claims with the cluster's key, outcomes written in
batches by the flusher, retries with backoff, parking, and the liveness of every cluster."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psycopg
from django_q.brokers import Broker
from django_q.conf import Conf, logger

from pgbroker.cluster.claiming import Claiming, Phase
from pgbroker.cluster.flusher import Flusher
from pgbroker.cluster.lines import first_line, last_line
from pgbroker.cluster.liveness import Fence, Sweeper
from pgbroker.cluster.messages import Claimed, Done
from pgbroker.cluster.session import DispatcherSession, OwnerKeyTaken
from pgbroker.cluster.sources import (
    HANDED_BACK,
    PUBLISH_EVERY,
    JobSource,
    Workers,
    save,
)
from pgbroker.cluster.worker import WorkerSetup
from pgbroker.cluster.writer import Outcome, Writer
from pgbroker.connection import no_slot, timing

GAVE_UP = "gave up after {attempts} attempts; the last: {last}"
NO_SLOT_WHY = "waited for a database connection slot, not counted as an attempt: {error}"
NO_SLOT_WAIT = 1.0  # seconds a job refused a connection waits before it is tried again
RUN_AGAIN_MAX = 60.0


def backoff(attempts: int) -> float:
    """Seconds before a failed job runs again: 1, 2, 4 ... capped at a minute."""
    return min(float(2 ** max(attempts - 1, 0)), RUN_AGAIN_MAX)


class PostgresSource(JobSource):
    def __init__(self, *, broker: Broker, alias: str, owner: int, wake_fd: int,
                 workers: Workers) -> None:
        self.broker = broker
        self.owner = owner
        queue = broker.list_key
        self.setup = WorkerSetup(owner=owner, rows=True)
        self.session = DispatcherSession(alias=alias, queue=queue, owner=owner)
        self.claiming = Claiming(self.session)
        self.sweeper = Sweeper(self.session)
        self.flusher = Flusher(Writer(alias=alias, owner=owner), wake_fd, new=Outcome)
        self.outcome = Outcome()
        self.fence: Fence | None = None
        self.workers = workers
        self.pid = 0
        self.down_since: float | None = None
        self.down_why = ""  # why the session is down, or why it cannot be opened again
        self.slot_outage: tuple[float, int] | None = None  # no connection slot: since, jobs
        self.next_publish = 0.0

    # --- life cycle -----------------------------------------------------------------------

    def start(self, *, pid: int) -> None:
        self.pid = pid
        self.session.connect(pid=pid)

    def started(self) -> None:
        self.fence = Fence(last_ok=lambda: self.session.last_ok, seconds=timing().fence,
                           workers=self.workers)
        self.fence.start()

    def stop(self) -> None:
        self.flusher.stop()
        with contextlib.suppress(psycopg.Error):
            self.session.leave()
        self.session.close()

    def settled(self) -> bool:
        return self.flusher.idle()

    def drained(self) -> bool:
        """Asleep: the last claims found nothing due and no enqueue was in flight; a job
        handed back or retried now wakes it first."""
        return self.claiming.phase is Phase.ASLEEP and self.flusher.idle() \
            and not self.outcome and not self.claiming.due(time.monotonic())

    def fds(self) -> list[int]:
        fds = [self.session.fileno()] if self.session.up else []
        conn = self.flusher.writer.conn
        if conn is not None and not conn.closed:
            fds.append(conn.fileno())
        return fds

    # --- claiming -------------------------------------------------------------------------

    def up(self) -> bool:
        return self.session.up

    def unready(self, now: float) -> str:
        if not self.session.up:
            since = self.down_since
            down = f" for {now - since:.0f} s" if since is not None else ""
            return f"no database{down}: {self.down_why}" if self.down_why \
                else f"no database{down}"
        return self.flusher.unready(now)

    def due(self, now: float) -> bool:
        return self.session.up and self.claiming.due(now)

    def deadline(self) -> float | None:
        return self.claiming.deadline()

    def wait_objects(self) -> list[Any]:
        return [self.session] if self.session.up else []

    def after_wait(self, ready: list[Any]) -> None:
        if self.session.up and self.session in ready:
            try:
                self.session.drain_notifications()
            except psycopg.Error as e:
                self._lost(e)

    def take(self, room: int) -> list[Claimed]:
        want = max(room, min(Conf.BULK, room + (Conf.QUEUE_LIMIT or 0)))
        try:
            claimed = self.session.claim(want)
            self.claiming.claimed(len(claimed))
        except psycopg.Error as e:
            self._lost(e)
            return []
        jobs = []
        for job in claimed:
            if Conf.MAX_ATTEMPTS > 0 and job.attempts > Conf.MAX_ATTEMPTS:
                self.outcome.park.append((job.id, GAVE_UP.format(
                    attempts=job.attempts - 1, last=job.last_error or "(no error recorded)")))
            else:
                jobs.append(job)
        return jobs

    def dispatched(self) -> None:
        if self.session.up:
            try:
                self.claiming.dispatched()
            except psycopg.Error as e:
                self._lost(e)

    # --- outcomes -------------------------------------------------------------------------

    def finished(self, job: Claimed | None, done: Done) -> None:
        if done.task is not None:
            done.task.pop("ack_id", None)  # acknowledged below, never by save_task's limit
            save(done.task, self.broker)
        if done.row is not None:
            self.outcome.results.append(done.row)
        if done.ack:
            self.outcome.done.append(done.job_id)
            if self.slot_outage is not None:
                self._slots_again()
            return
        if no_slot(done.error):  # the job could not connect: not the job's fault
            self.no_slot(done.job_id, last_line(done.error))
            return
        if self.slot_outage is not None:
            self._slots_again()
        attempts = job.attempts if job else 1
        error, line = done.error, last_line(done.error)
        if Conf.MAX_ATTEMPTS > 0 and attempts >= Conf.MAX_ATTEMPTS:
            self.outcome.park.append((done.job_id, GAVE_UP.format(attempts=attempts,
                                                                  last=error)))
            logger.error("job %s failed on attempt %s and is parked: %s", done.job_id,
                         attempts, line)
        else:
            delay = backoff(attempts)
            again = time.strftime("%H:%M:%S", time.localtime(time.time() + delay))
            self.outcome.retry.append((done.job_id, delay, 0, f"attempt {attempts} failed, "
                                       f"runs again at {again}: {error}"))
            logger.warning("job %s failed on attempt %s, runs again at %s: %s", done.job_id,
                           attempts, again, line)

    def died(self, job: Claimed, why: str) -> None:
        if Conf.MAX_ATTEMPTS > 0 and job.attempts >= Conf.MAX_ATTEMPTS:
            self.outcome.park.append((job.id, GAVE_UP.format(attempts=job.attempts, last=why)))
        else:
            self.outcome.retry.append((job.id, 0.0, 0, why))

    def hand_back(self, job: Claimed, *, give_back: int, why: str = HANDED_BACK) -> None:
        self.outcome.retry.append((job.id, 0.0, give_back, why))

    def bad_package(self, job_id: int | str, error: str) -> None:
        self.outcome.park.append((job_id, error))

    def no_slot(self, job_id: int | str, error: str) -> None:
        """PostgreSQL had no connection slot for the job (its worker's key session, or the
        job's own connection): back in the queue in a second, its attempt given back, so a
        full server parks nothing. Said once per outage."""
        self.outcome.retry.append((job_id, NO_SLOT_WAIT, 1, NO_SLOT_WHY.format(error=error)))
        if self.slot_outage is None:
            self.slot_outage = (time.monotonic(), 0)
            logger.error("PostgreSQL has no connection slot for a worker (%s): its jobs wait "
                         "and go on when one frees; no attempt is counted", error)
        self.slot_outage = (self.slot_outage[0], self.slot_outage[1] + 1)

    def _slots_again(self) -> None:
        if self.slot_outage is None:
            return
        since, jobs = self.slot_outage
        self.slot_outage = None
        logger.warning("PostgreSQL has connection slots again: %d job attempt(s) waited %.1f s "
                       "for one", jobs, time.monotonic() - since)

    def flush(self) -> None:
        if self.outcome:
            self.flusher.put(self.outcome)
            self.outcome = Outcome()
        if self.flusher.take_requeued():
            self.claiming.wake()  # retries were written: work no NOTIFY announces

    # --- housekeeping ---------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self._check_threads()
        if not self.session.up:
            self._reconnect()
        if not self.session.up:
            return
        try:
            if self.sweeper.sweep(now):
                self.claiming.wake()
            if now >= self.next_publish:
                self.next_publish = now + PUBLISH_EVERY
                self.session.publish(idle=self.claiming.flagged,
                                     workers=self.workers.snapshot())
        except psycopg.Error as e:
            self._lost(e)

    def _check_threads(self) -> None:
        """Without its flusher nothing it runs is ever acknowledged, without its fence a cut
        may let its jobs run twice: a dispatcher missing either stops (its main process starts
        a new one, and its jobs are taken back)."""
        for thread in (self.flusher.thread, self.fence):
            if thread is not None and not thread.is_alive() and not self.workers.stopping:
                raise RuntimeError(f"the dispatcher's {thread.name} thread died")

    def _lost(self, error: Exception) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            logger.error("lost the database: %s", str(error).strip() or type(error).__name__)
        self.down_why = first_line(error)
        self.session.close()

    def _reconnect(self) -> None:
        """A new session, with the same key: the jobs still carrying it are ours; any other
        cluster may have taken the rest back while we were away."""
        down = time.monotonic() - (self.down_since or time.monotonic())
        try:
            self.session.connect(pid=self.pid)
        except (psycopg.Error, OwnerKeyTaken) as e:
            logger.debug("reconnect failed: %s", e)
            self.down_why = first_line(e)
            return
        logger.warning("database back after %.1fs", down)
        self.down_since = None
        self.down_why = ""
        self.claiming.reconnected()
        mine = self.workers.held_ids()
        try:
            ours = self.session.still_ours(mine) if mine else set()
        except psycopg.Error as e:
            self._lost(e)
            return
        self.workers.keep_only(ours)
        known = set(mine) | self.outcome.ids() | self.flusher.ids()
        try:
            orphans = self.session.hand_back_unknown(known)
        except psycopg.Error as e:
            self._lost(e)
            return
        if orphans:
            logger.warning("handed back %s job(s) claimed while the connection broke: %s",
                           len(orphans), orphans[:10])

