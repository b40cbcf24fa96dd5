"""The dispatcher's side of the queue table, on its own autocommit psycopg connection.

That connection is the cluster's life line: it holds the session advisory lock whose key is
the cluster's `owner`, stamped on every job the cluster claims. The lock lives exactly as long
as the session: when the dispatcher dies (or its backend is terminated), PostgreSQL frees the
key within milliseconds and any other cluster's sweep sees its jobs as orphaned.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from django.conf import settings
from django.db import connections
from django_q.models import Task

from pgbroker.timing import Timing, with_options

ENQUEUE_LOCK_CLASS = 29026  # the enqueue function's shared lock: pg_advisory_xact_lock_shared
CHANNEL = "pgbroker"

CLAIM = """
WITH next AS (
    SELECT id FROM pgbroker_job
     WHERE queue = %(queue)s AND owner IS NULL AND parked_at IS NULL AND run_at <= now()
     ORDER BY run_at, id
     LIMIT %(n)s
       FOR UPDATE SKIP LOCKED)
UPDATE pgbroker_job AS j
   SET owner = %(owner)s, attempts = j.attempts + 1, claimed_at = clock_timestamp()
  FROM next
 WHERE j.id = next.id
RETURNING j.id, j.payload, j.attempts, j.last_error,
          extract(epoch FROM clock_timestamp() - j.run_at)::float8
"""

NEXT_RUN_AT = """
SELECT extract(epoch FROM min(run_at) - clock_timestamp()) FROM pgbroker_job
 WHERE queue = %s AND owner IS NULL AND parked_at IS NULL
"""

# An enqueue that saw this cluster busy holds the shared lock until it commits: while one is
# in flight the exclusive lock is not free, and the cluster must look again before sleeping.
NO_ENQUEUE_IN_FLIGHT = """
SELECT CASE WHEN pg_try_advisory_lock(%(cls)s, hashtext(%(queue)s))
            THEN pg_advisory_unlock(%(cls)s, hashtext(%(queue)s)) ELSE false END
"""

ACK = "DELETE FROM pgbroker_job WHERE id = ANY(%s) AND owner = %s"

# A failed job waits its backoff; one handed back unstarted, or whose worker died, keeps its
# place in the queue (it runs before what came in meanwhile).
RETRY = """
UPDATE pgbroker_job AS j
   SET owner = NULL, claimed_at = NULL,
       run_at = CASE WHEN v.delay > 0 THEN clock_timestamp() + make_interval(secs => v.delay)
                     ELSE least(j.run_at, clock_timestamp()) END,
       attempts = j.attempts - v.give_back, last_error = v.error
  FROM unnest(%s::bigint[], %s::float8[], %s::int[], %s::text[]) AS v(id, delay, give_back, error)
 WHERE j.id = v.id AND j.owner = %s
"""

PARK = """
UPDATE pgbroker_job AS j
   SET owner = NULL, claimed_at = NULL, parked_at = clock_timestamp(), last_error = v.error
  FROM unnest(%s::bigint[], %s::text[]) AS v(id, error)
 WHERE j.id = v.id AND j.owner = %s
"""

STILL_OURS = "SELECT id FROM pgbroker_job WHERE id = ANY(%s) AND owner = %s"

# Jobs carrying our key that we do not know of: a claim that committed while the connection
# broke, its rows never received. Nobody ran them: free them and give the attempt back.
HAND_BACK_UNKNOWN = """
UPDATE pgbroker_job
   SET owner = NULL, claimed_at = NULL, attempts = greatest(attempts - 1, 0), last_error = %s
 WHERE owner = %s AND NOT (id = ANY(%s))
RETURNING id
"""

# Owners whose key nobody holds: their cluster's session is gone. Trying the lock takes it;
# the caller keeps it while it takes their jobs back, so a dispatcher that reconnects cannot
# re-take its key halfway through and believe its jobs are still its own.
DEAD_OWNERS = """
SELECT o.owner FROM (
    SELECT DISTINCT owner FROM pgbroker_job WHERE owner IS NOT NULL AND owner <> %(me)s
    UNION
    SELECT owner FROM pgbroker_cluster WHERE owner <> %(me)s) AS o
 WHERE pg_try_advisory_lock(o.owner)
"""

# Taken back, a job keeps its place in the queue: it was due (or running) before the jobs
# enqueued since, and runs before them.
TAKE_BACK = """
UPDATE pgbroker_job
   SET owner = NULL, claimed_at = NULL, last_error = %s
 WHERE owner = %s
"""


def timing() -> Timing:
    """The timeouts of both sides of a connection (settings.PGBROKER_TIMING, pgbroker.timing)."""
    return getattr(settings, "PGBROKER_TIMING", None) or Timing()


def host_name() -> str:
    """This machine's name in the clusters' table and the logs: settings.HOST_NAME (the lab's
    hosts share one kernel, so one hostname), else the hostname."""
    return getattr(settings, "HOST_NAME", "") or socket.gethostname()


# What PostgreSQL says when it has no connection slot for a new session (SQLSTATE 53300):
# beyond max_connections, past a role's or a database's CONNECTION LIMIT, or into the slots
# reserved for superusers. A connection refused so never ran anything.
NO_SLOT = ("too many clients already", "too many connections for",
           "remaining connection slots are reserved")


def no_slot(error: BaseException | str | None) -> bool:
    """Was `error` (or the text of one: a job's traceback) PostgreSQL refusing a new
    connection for want of a slot? A refused connection carries no SQLSTATE in libpq, so its
    message is read: PostgreSQL's English messages (lc_messages C or en, as initdb's
    --locale=C and most servers have it)."""
    if isinstance(error, BaseException):
        causes = [error, error.__cause__]
        if any(getattr(e, "sqlstate", None) == "53300" for e in causes if e is not None):
            return True
    text = str(error or "")
    return any(marker in text for marker in NO_SLOT)


class NoSlot(Exception):
    """A worker could not open its key session: PostgreSQL has no connection slot."""


def connection_params(alias: str) -> dict:
    """psycopg keyword arguments for `alias` as Django would connect (OPTIONS included),
    with a connect timeout, and timeouts on both sides so a vanished peer is noticed in
    seconds (pgbroker.timing), unless Django's OPTIONS set them already."""
    params = connections[alias].get_connection_params()
    # application_name: each caller names its own connection ("pgbroker worker", "side")
    for key in ("cursor_factory", "context", "prepare_threshold", "application_name"):
        params.pop(key, None)
    if "tcp_user_timeout" not in params:
        params = with_options(params, timing())
    return params


def dispatcher_params(alias: str) -> dict:
    """The dispatcher's session: its own statements are short; one that waits (a lock, a
    server in trouble) is cancelled, so the dispatcher stays responsive."""
    params = connection_params(alias)
    params["connect_timeout"] = 2  # libpq's least: a reconnect blocks the dispatcher's loop
    t = timing()
    extra = (f"-c statement_timeout={t.statement_timeout_ms} "
             f"-c lock_timeout={t.statement_timeout_ms // 2}")
    params["options"] = f"{params.get('options', '')} {extra}".strip()
    return params


class OwnerKeyTaken(Exception):
    """Another cluster holds this cluster's key for a moment (it is taking our jobs back)."""


@dataclass
class Claimed:
    id: int
    payload: str
    attempts: int
    last_error: str
    waited: float = 0.0  # seconds it had been due when claimed (the database's clock)
    claimed_t: float = 0.0  # when this process claimed it (monotonic)


@dataclass
class Outcome:
    """What one flush writes, in one transaction."""

    results: list[bytes] = field(default_factory=list)  # django_q_task rows, COPY lines
    done: list[int] = field(default_factory=list)
    retry: list[tuple[int, float, int, str]] = field(default_factory=list)  # id, delay, give back
    park: list[tuple[int, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.results or self.done or self.retry or self.park)

    def ids(self) -> set[int]:
        return {*self.done, *(r[0] for r in self.retry), *(p[0] for p in self.park)}

    def merge(self, other: Outcome) -> None:
        self.results += other.results
        self.done += other.done
        self.retry += other.retry
        self.park += other.park


RESULT_COLUMNS = ('id, name, func, hook, args, kwargs, result, "group", started, stopped, '
                  "success, cluster")
RESULTS_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS pgbroker_results (
    id varchar(32), name varchar(100), func varchar(256), hook varchar(256), args text,
    kwargs text, result text, "group" varchar(100), started timestamptz, stopped timestamptz,
    success boolean, cluster varchar(100)) ON COMMIT DELETE ROWS
"""


def task_upsert_sql() -> str:
    """The batch's results, copied into a temporary table, become django-q2 result rows in one
    statement (django-q2's monitor writes them one by one, one commit each). The last result
    of a task in the batch wins."""
    table = Task._meta.db_table
    return f"""
INSERT INTO {table} AS t ({RESULT_COLUMNS}, attempt_count)
SELECT DISTINCT ON (id) {RESULT_COLUMNS}, 1 FROM pgbroker_results ORDER BY id, stopped DESC
ON CONFLICT (id) DO UPDATE
   SET stopped = EXCLUDED.stopped, result = EXCLUDED.result, success = EXCLUDED.success,
       attempt_count = t.attempt_count + 1
 WHERE NOT t.success
"""


def _copy_text(value) -> str:
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    return (str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def result_line(row: tuple) -> bytes:
    """One result row in COPY's text format. Workers build these, so the dispatcher only joins
    bytes."""
    return ("\t".join(_copy_text(v) for v in row) + "\n").encode()


class Store:
    def __init__(self, *, alias: str, queue: str, owner: int) -> None:
        self.alias = alias
        self.queue = queue
        self.owner = owner
        self.params = dispatcher_params(alias)
        self.conn: psycopg.Connection | None = None
        self.woken = False
        # when a statement last came back from the server (monotonic): the fence's clock
        self.last_ok = time.monotonic()

    # --- the session ------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.conn is not None and not self.conn.closed and not self.conn.broken

    def fileno(self) -> int:
        return self.conn.fileno()

    def _execute(self, sql: str, params=None) -> psycopg.Cursor:
        cur = self.conn.execute(sql, params)
        self.last_ok = time.monotonic()
        return cur

    def connect(self, *, pid: int) -> None:
        """Open the session and hold the owner key, shared: the cluster's workers hold it too
        (pgbroker.cluster.WorkerKey), and another cluster can take it, exclusively, only once
        every session of this cluster has ended. A session of ours that the server still
        keeps after a partition healed does not stand in the way of the new one."""
        conn = psycopg.connect(**self.params, autocommit=True,
                               application_name=f"pgbroker {self.queue}")
        try:
            if not conn.execute("SELECT pg_try_advisory_lock_shared(%s)",
                                [self.owner]).fetchone()[0]:
                raise OwnerKeyTaken(f"owner key {self.owner:x} is being taken back by "
                                    "another cluster")
            conn.add_notify_handler(self._notified)
            conn.execute(f"LISTEN {CHANNEL}")
            conn.execute(
                "INSERT INTO pgbroker_cluster (owner, queue, host, pid, idle, workers) "
                "VALUES (%s, %s, %s, %s, false, '[]') "
                "ON CONFLICT (owner) DO UPDATE SET idle = false, seen_at = now()",
                [self.owner, self.queue, host_name(), pid])
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.last_ok = time.monotonic()
        self.woken = True  # look for work at once

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def leave(self) -> None:
        """A clean stop: forget this cluster (its jobs were handed back or acknowledged)."""
        if self.up:
            self._execute("DELETE FROM pgbroker_cluster WHERE owner = %s", [self.owner])

    def _notified(self, notify: psycopg.Notify) -> None:
        if notify.payload == self.queue:
            self.woken = True

    def drain_notifications(self) -> None:
        """The socket is readable while no query runs: read what the server sent."""
        pgconn = self.conn.pgconn
        pgconn.consume_input()
        while (n := pgconn.notifies()) is not None:
            if n.extra.decode() == self.queue:
                self.woken = True
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            raise psycopg.OperationalError("the connection to the database was lost")

    # --- claiming ---------------------------------------------------------------------------

    def claim(self, n: int) -> list[Claimed]:
        self.woken = False
        rows = self._execute(CLAIM, {"queue": self.queue, "n": n, "owner": self.owner})
        now = time.monotonic()
        return sorted((Claimed(*row, claimed_t=now) for row in rows), key=lambda c: c.id)

    def set_idle(self, idle: bool) -> None:
        self._execute("UPDATE pgbroker_cluster SET idle = %s WHERE owner = %s",
                          [idle, self.owner])

    def no_enqueue_in_flight(self) -> bool:
        row = self._execute(NO_ENQUEUE_IN_FLIGHT,
                                {"cls": ENQUEUE_LOCK_CLASS, "queue": self.queue}).fetchone()
        return bool(row[0])

    def seconds_to_next_run(self) -> float | None:
        (seconds,) = self._execute(NEXT_RUN_AT, [self.queue]).fetchone()
        return None if seconds is None else max(0.0, float(seconds))

    def still_ours(self, ids: Iterable[int]) -> set[int]:
        rows = self._execute(STILL_OURS, [list(ids), self.owner])
        return {row[0] for row in rows}

    def hand_back_unknown(self, known: Iterable[int]) -> list[int]:
        """Free the jobs with our key that are not in `known` (every job we hold, run or
        have finished and not yet written); returns their ids."""
        note = (f"handed back at {time.strftime('%H:%M:%S')}: claimed while the connection "
                "broke, never received")
        rows = self._execute(HAND_BACK_UNKNOWN, [note, self.owner, list(known)])
        return [row[0] for row in rows]

    # --- liveness ---------------------------------------------------------------------------

    def publish(self, *, idle: bool, workers: Sequence[dict]) -> None:
        self._execute(
            "UPDATE pgbroker_cluster SET seen_at = now(), idle = %s, workers = %s "
            "WHERE owner = %s", [idle, json.dumps(list(workers)), self.owner])

    def dead_owners(self) -> list[int]:
        """Owners whose key was free; the caller now holds each key until `release_key`."""
        return [row[0] for row in self._execute(DEAD_OWNERS, {"me": self.owner})]

    def take_back(self, dead: int) -> int:
        """Free every job of a dead owner (whose key the caller holds) and forget it."""
        with self.conn.transaction():
            n = self._execute(
                TAKE_BACK, [f"taken back at {time.strftime('%H:%M:%S')}: cluster {dead:x} "
                            f"died (its database session ended)", dead]).rowcount
            self._execute("DELETE FROM pgbroker_cluster WHERE owner = %s", [dead])
        return n

    def release_key(self, key: int) -> None:
        self._execute("SELECT pg_advisory_unlock(%s)", [key])


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
        self.conn: psycopg.Connection | None = None
        self.on_lost = on_lost  # (the job it was running, why): exits the worker
        self.mutex = threading.Lock()
        self.in_main = False  # the worker's own thread is inside holds_for()
        self.current: int | None = None  # the job the worker runs now
        self.lost = False

    def _take(self, job_id: int | None) -> psycopg.Connection | None:
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
            held = conn.execute(
                "SELECT pg_try_advisory_lock_shared(%(o)s) AND (%(id)s::bigint IS NULL OR "
                "EXISTS (SELECT 1 FROM pgbroker_job WHERE id = %(id)s AND owner = %(o)s))",
                {"o": self.owner, "id": job_id}).fetchone()[0]
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


class Writer:
    """Writes finished jobs on a connection of its own: results, acknowledgements, retries
    and parked jobs, each batch in one transaction. Its commits are asynchronous
    (synchronous_commit off): a database crash can lose the last acknowledgements of a few
    milliseconds, and those jobs run again (at least once, as always; never lost)."""

    def __init__(self, *, alias: str, owner: int) -> None:
        self.owner = owner
        self.params = connection_params(alias)
        extra = "-c synchronous_commit=off"
        self.params["options"] = f"{self.params.get('options', '')} {extra}".strip()
        self.conn: psycopg.Connection | None = None
        self._upsert = task_upsert_sql()

    def connect(self) -> None:
        """Open the session now if it is not open: the cluster opens it at start, so a server
        out of connection slots later still takes what the workers finished (and the jobs
        they handed back for want of a slot)."""
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(**self.params, autocommit=True,
                                        application_name="pgbroker writer")
            self.conn.execute(RESULTS_TABLE)

    def flush(self, outcome: Outcome) -> None:
        self.connect()
        with self.conn.transaction(), self.conn.cursor() as cur:
            if outcome.results:
                with cur.copy(f"COPY pgbroker_results ({RESULT_COLUMNS}) FROM STDIN") as copy:
                    copy.write(b"".join(outcome.results))
                cur.execute(self._upsert)
            if outcome.done:
                cur.execute(ACK, [outcome.done, self.owner])
            if outcome.retry:
                ids, delays, give_back, errors = zip(*outcome.retry, strict=True)
                cur.execute(RETRY, [list(ids), list(delays), list(give_back), list(errors),
                                    self.owner])
            if outcome.park:
                ids, errors = zip(*outcome.park, strict=True)
                cur.execute(PARK, [list(ids), list(errors), self.owner])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
