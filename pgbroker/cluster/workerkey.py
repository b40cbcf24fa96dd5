"""A worker's own hold on its cluster's key (see WorkerKey)."""

from __future__ import annotations

import contextlib
import select
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from pgbroker.connection import NoSlot, connection_params, no_slot


class WorkerKey:
    """A worker's own session, holding its cluster's owner key shared for as long as the
    worker lives. Another cluster takes the key (exclusively) only once every session of this
    cluster has ended, dispatcher's and workers' alike: a dispatcher that is paused, or whose
    session was ended, cannot have its jobs taken from workers that are still running them.

    The worker opens the session before its first job, and checks then that the job is still
    its cluster's (it may have been taken back before the key was held). A thread watches the
    session: when the server ends it (a restart, `pg_terminate_backend`), it takes the key
    again on a new session at once, well inside the grace another cluster waits before taking
    anything, and checks that the job it runs is still its cluster's; if either fails, the
    worker exits there, in the middle of its job (`on_lost`). Before each job the worker checks
    the session without a round trip. A cut-off host is its dispatcher's fence's to stop."""

    def __init__(self, *, alias: str, owner: int,
                 on_lost: Callable[[int | None, str], None]) -> None:
        self.owner = owner
        self.params = connection_params(alias)
        self.conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self.on_lost = on_lost  # (the job it was running, why): exits the worker
        self.mutex = threading.Lock()
        self.in_main = False  # the worker's own thread is inside holds_for()
        self.current: int | None = None  # the job the worker runs now
        self.lost = False

    def _take(self, job_id: int | None) -> psycopg.Connection[tuple[Any, ...]] | None:
        """A new session holding the key shared, provided `job_id` is still this cluster's.
        NoSlot when PostgreSQL refused the session for want of a connection slot."""
        try:
            conn = psycopg.connect(**self.params, autocommit=True,
                                   application_name="pgbroker worker")
        except psycopg.Error as e:
            if no_slot(e):
                raise NoSlot(str(e).strip().splitlines()[-1].strip()) from None
            return None
        try:
            row = conn.execute(
                "SELECT pg_try_advisory_lock_shared(%(o)s) AND (%(id)s::bigint IS NULL OR "
                "EXISTS (SELECT 1 FROM pgbroker_job WHERE id = %(id)s AND owner = %(o)s))",
                {"o": self.owner, "id": job_id}).fetchone()
            held = bool(row and row[0])
        except psycopg.Error:
            held = False
        if not held:
            conn.close()
            return None
        return conn

    def holds_for(self, job_id: int) -> bool:
        """Does this worker hold its cluster's key for `job_id`? NoSlot: the first session
        could not be opened for want of a connection slot (nothing is lost: the job goes
        back, and the next job tries again)."""
        with self.mutex:
            self.in_main = True
            try:
                if self.lost:
                    return False
                if self.conn is None:
                    self.conn = self._take(job_id)  # NoSlot goes up to the worker
                    if self.conn is None:
                        self.lost = True
                        return False
                    threading.Thread(target=self._watch, name="key", daemon=True).start()
                elif not self.alive() and not self._again(job_id):
                    return False
                self.current = job_id
                return True
            finally:
                self.in_main = False

    def done(self) -> None:
        self.current = None

    def _again(self, job_id: int | None) -> bool:
        """The session ended: take the key again for `job_id` (the mutex is held). Without a
        slot the key is not held: the worker must stop."""
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
        try:
            self.conn = self._take(job_id)
        except NoSlot:
            self.conn = None
        if self.conn is None:
            self.lost = True
            return False
        return True

    def _watch(self) -> None:
        while True:
            conn = self.conn
            if conn is None:
                return
            with contextlib.suppress(OSError, ValueError, psycopg.Error):
                select.select([conn.fileno()], [], [])
            with self.mutex:
                if self.conn is not conn or self.alive():
                    continue  # replaced meanwhile, or a notice
                job = self.current
                if not self._again(job):
                    self.on_lost(job, "its key session ended and the key could not be held "
                                      "again for its job")
                    return

    def check_after_stop(self) -> None:
        """After SIGCONT (the worker was stopped): is the key still held, and the job still
        this cluster's? If not, exit before one more instruction of the job runs."""
        if self.in_main or self.conn is None:
            return  # holds_for() was interrupted: it finishes its own check
        if not self.mutex.acquire(timeout=5):
            return
        try:
            if self.lost or (not self.alive() and not self._again(self.current)):
                self.on_lost(self.current, "its cluster's key was lost while it was stopped")
        finally:
            self.mutex.release()

    def alive(self) -> bool:
        """Nothing runs on this session: if its socket is readable, the server has spoken,
        and on an idle session that is the end of it (or a notice, which changes nothing)."""
        if self.conn is None or self.conn.closed:
            return False
        for _ in range(3):  # the server's last word, then the end of the stream
            readable, _, _ = select.select([self.conn.fileno()], [], [], 0)
            if not readable:
                return self.conn.pgconn.status == psycopg.pq.ConnStatus.OK
            try:
                self.conn.pgconn.consume_input()
            except psycopg.Error:
                return False
        return False  # still talking to a session that runs nothing: not ours any more
