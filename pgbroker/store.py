"""The dispatcher's side of the queue table, on its own autocommit psycopg connection.

That connection is the cluster's life line: it holds the session advisory lock whose key is
the cluster's `owner`, stamped on every job the cluster claims. The lock lives exactly as long
as the session: when the dispatcher dies (or its backend is terminated), PostgreSQL frees the
key within milliseconds and any other cluster's sweep sees its jobs as orphaned.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from django.db import connections
from django_q.models import Task

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
RETURNING j.id, j.payload, j.attempts, j.last_error
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

RETRY = """
UPDATE pgbroker_job AS j
   SET owner = NULL, claimed_at = NULL,
       run_at = clock_timestamp() + make_interval(secs => v.delay),
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
   SET owner = NULL, claimed_at = NULL, run_at = clock_timestamp(),
       attempts = greatest(attempts - 1, 0), last_error = %s
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

TAKE_BACK = """
UPDATE pgbroker_job
   SET owner = NULL, claimed_at = NULL, run_at = clock_timestamp(), last_error = %s
 WHERE owner = %s
"""


def connection_params(alias: str) -> dict:
    """psycopg keyword arguments for `alias` as Django would connect (OPTIONS included),
    with a connect timeout and TCP keepalives so a vanished host is noticed."""
    params = connections[alias].get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    params.setdefault("connect_timeout", 5)
    params.setdefault("keepalives", 1)
    params.setdefault("keepalives_idle", 10)
    params.setdefault("keepalives_interval", 5)
    params.setdefault("keepalives_count", 3)
    return params


class OwnerKeyTaken(Exception):
    """Another cluster holds this cluster's key for a moment (it is taking our jobs back)."""


@dataclass
class Claimed:
    id: int
    payload: str
    attempts: int
    last_error: str


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
        self.params = connection_params(alias)
        self.conn: psycopg.Connection | None = None
        self.woken = False

    # --- the session ------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.conn is not None and not self.conn.closed and not self.conn.broken

    def fileno(self) -> int:
        return self.conn.fileno()

    def connect(self, *, pid: int) -> None:
        conn = psycopg.connect(**self.params, autocommit=True,
                               application_name=f"pgbroker {self.queue}")
        try:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", [self.owner]).fetchone()[0]:
                raise OwnerKeyTaken(f"owner key {self.owner:x} is held by another session")
            conn.add_notify_handler(self._notified)
            conn.execute(f"LISTEN {CHANNEL}")
            conn.execute(
                "INSERT INTO pgbroker_cluster (owner, queue, host, pid, idle, workers) "
                "VALUES (%s, %s, %s, %s, false, '[]') "
                "ON CONFLICT (owner) DO UPDATE SET idle = false, seen_at = now()",
                [self.owner, self.queue, socket.gethostname(), pid])
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.woken = True  # look for work at once

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def leave(self) -> None:
        """A clean stop: forget this cluster (its jobs were handed back or acknowledged)."""
        if self.up:
            self.conn.execute("DELETE FROM pgbroker_cluster WHERE owner = %s", [self.owner])

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
        rows = self.conn.execute(CLAIM, {"queue": self.queue, "n": n, "owner": self.owner})
        return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)

    def set_idle(self, idle: bool) -> None:
        self.conn.execute("UPDATE pgbroker_cluster SET idle = %s WHERE owner = %s",
                          [idle, self.owner])

    def no_enqueue_in_flight(self) -> bool:
        row = self.conn.execute(NO_ENQUEUE_IN_FLIGHT,
                                {"cls": ENQUEUE_LOCK_CLASS, "queue": self.queue}).fetchone()
        return bool(row[0])

    def seconds_to_next_run(self) -> float | None:
        (seconds,) = self.conn.execute(NEXT_RUN_AT, [self.queue]).fetchone()
        return None if seconds is None else max(0.0, float(seconds))

    def still_ours(self, ids: Iterable[int]) -> set[int]:
        rows = self.conn.execute(STILL_OURS, [list(ids), self.owner])
        return {row[0] for row in rows}

    def hand_back_unknown(self, known: Iterable[int]) -> list[int]:
        """Free the jobs with our key that are not in `known` (every job we hold, run or
        have finished and not yet written); returns their ids."""
        note = (f"handed back at {time.strftime('%H:%M:%S')}: claimed while the connection "
                "broke, never received")
        rows = self.conn.execute(HAND_BACK_UNKNOWN, [note, self.owner, list(known)])
        return [row[0] for row in rows]

    # --- liveness ---------------------------------------------------------------------------

    def publish(self, *, idle: bool, workers: Sequence[dict]) -> None:
        self.conn.execute(
            "UPDATE pgbroker_cluster SET seen_at = now(), idle = %s, workers = %s "
            "WHERE owner = %s", [idle, json.dumps(list(workers)), self.owner])

    def dead_owners(self) -> list[int]:
        """Owners whose key was free; the caller now holds each key until `release_key`."""
        return [row[0] for row in self.conn.execute(DEAD_OWNERS, {"me": self.owner})]

    def take_back(self, dead: int) -> int:
        """Free every job of a dead owner (whose key the caller holds) and forget it."""
        with self.conn.transaction():
            n = self.conn.execute(
                TAKE_BACK, [f"taken back at {time.strftime('%H:%M:%S')}: cluster {dead:x} "
                            f"died (its database session ended)", dead]).rowcount
            self.conn.execute("DELETE FROM pgbroker_cluster WHERE owner = %s", [dead])
        return n

    def release_key(self, key: int) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", [key])


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

    def flush(self, outcome: Outcome) -> None:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(**self.params, autocommit=True,
                                        application_name="pgbroker writer")
            self.conn.execute(RESULTS_TABLE)
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
