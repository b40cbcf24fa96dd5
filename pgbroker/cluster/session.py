"""The dispatcher's side of the queue table, on its own autocommit psycopg connection.

That connection is the cluster's life line: it holds the session advisory lock whose key is
the cluster's `owner`, stamped on every job the cluster claims. The lock lives exactly as long
as the session: when the dispatcher dies (or its backend is terminated), PostgreSQL frees the
key within milliseconds and any other cluster's sweep sees its jobs as orphaned.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from pgbroker.broker import CHANNEL, ENQUEUE_LOCK_CLASS
from pgbroker.cluster.messages import Claimed
from pgbroker.connection import connection_params, host_name, timing

# The due jobs with the highest priority, then the oldest: in (pgbroker_rank, id) order, where
# a job counts as due a minute earlier per point of priority (migration 0003), so one that has
# waited long enough comes before newer ones of any priority. One scan of pgbroker_claim_idx,
# in its order (no sort); `run_at <= now()` is checked on its last column, so jobs waiting for
# a retry whose rank is already ahead are passed over in the index, never fetched.
# UPDATE ... RETURNING has no order: each row's rank comes back, and claim() puts them in it.
CLAIM = """
WITH next AS (
    SELECT id FROM pgbroker_job
     WHERE queue = %(queue)s AND owner IS NULL AND parked_at IS NULL AND run_at <= now()
     ORDER BY pgbroker_rank(run_at, priority), id
     LIMIT %(n)s
       FOR UPDATE SKIP LOCKED)
UPDATE pgbroker_job AS j
   SET owner = %(owner)s, attempts = j.attempts + 1, claimed_at = clock_timestamp()
  FROM next
 WHERE j.id = next.id
RETURNING j.id, j.payload, j.attempts, j.last_error,
          extract(epoch FROM clock_timestamp() - j.run_at)::float8,
          extract(epoch FROM pgbroker_rank(j.run_at, j.priority))::float8
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


def dispatcher_params(alias: str) -> dict[str, Any]:
    """The dispatcher's session: its own statements are short; one that waits (a lock, a
    server in trouble) is cancelled, so the dispatcher stays responsive."""
    params = connection_params(alias)
    params["connect_timeout"] = 2  # libpq's least: a reconnect blocks the dispatcher's loop
    t = timing()
    extra = (f"-c statement_timeout={t.statement_timeout_ms} "
             f"-c lock_timeout={t.statement_timeout_ms // 2} -c synchronous_commit=off")
    params["options"] = f"{params.get('options', '')} {extra}".strip()
    return params


class OwnerKeyTaken(Exception):
    """Another cluster holds this cluster's key for a moment (it is taking our jobs back)."""


class DispatcherSession:
    """The dispatcher's session: claims, the idle flag, liveness (see the module)."""

    def __init__(self, *, alias: str, queue: str, owner: int) -> None:
        self.alias = alias
        self.queue = queue
        self.owner = owner
        self.params = dispatcher_params(alias)
        self.conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self.woken = False
        # when a statement last came back from the server (monotonic): the fence's clock
        self.last_ok = time.monotonic()

    # --- the session ------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.conn is not None and not self.conn.closed and not self.conn.broken

    @property
    def _conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self.conn is None:
            raise psycopg.OperationalError("the dispatcher's session is closed")
        return self.conn

    def fileno(self) -> int:
        return self._conn.fileno()

    def _execute(self, sql: str, params: Any = None) -> psycopg.Cursor[tuple[Any, ...]]:
        cur = self._conn.execute(sql, params)
        self.last_ok = time.monotonic()
        return cur

    def connect(self, *, pid: int) -> None:
        """Open the session and hold the owner key, shared: the cluster's workers hold it too
        (pgbroker.cluster.workerkey), and another cluster can take it, exclusively, only once
        every session of this cluster has ended. A session of ours that the server still
        keeps after a partition healed does not stand in the way of the new one."""
        conn = psycopg.connect(**self.params, autocommit=True,
                               application_name=f"pgbroker {self.queue}")
        try:
            row = conn.execute("SELECT pg_try_advisory_lock_shared(%s)",
                               [self.owner]).fetchone()
            if not (row and row[0]):
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
        pgconn = self._conn.pgconn
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
        return [Claimed(id=id_, payload=payload, attempts=attempts, last_error=error,
                        waited=waited, claimed_t=now)
                for id_, payload, attempts, error, waited, _rank
                in sorted(rows, key=lambda row: (row[5], row[0]))]

    def set_idle(self, idle: bool) -> None:
        self._execute("UPDATE pgbroker_cluster SET idle = %s WHERE owner = %s",
                      [idle, self.owner])

    def no_enqueue_in_flight(self) -> bool:
        row = self._execute(NO_ENQUEUE_IN_FLIGHT,
                            {"cls": ENQUEUE_LOCK_CLASS, "queue": self.queue}).fetchone()
        return bool(row and row[0])

    def seconds_to_next_run(self) -> float | None:
        row = self._execute(NEXT_RUN_AT, [self.queue]).fetchone()
        return None if row is None or row[0] is None else max(0.0, float(row[0]))

    def still_ours(self, ids: Iterable[int | str]) -> set[int | str]:
        rows = self._execute(STILL_OURS, [list(ids), self.owner])
        return {row[0] for row in rows}

    def hand_back_unknown(self, known: Iterable[int | str]) -> list[int]:
        """Free the jobs with our key that are not in `known` (every job we hold, run or
        have finished and not yet written); returns their ids."""
        note = (f"handed back at {time.strftime('%H:%M:%S')}: claimed while the connection "
                "broke, never received")
        rows = self._execute(HAND_BACK_UNKNOWN, [note, self.owner, list(known)])
        return [row[0] for row in rows]

    # --- liveness ---------------------------------------------------------------------------

    def publish(self, *, idle: bool, workers: Sequence[dict[str, Any]]) -> None:
        self._execute(
            "UPDATE pgbroker_cluster SET seen_at = now(), idle = %s, workers = %s "
            "WHERE owner = %s", [idle, json.dumps(list(workers)), self.owner])

    def dead_owners(self) -> list[int]:
        """Owners whose key was free; the caller now holds each key until `release_key`."""
        return [row[0] for row in self._execute(DEAD_OWNERS, {"me": self.owner})]

    def take_back(self, dead: int) -> int:
        """Free every job of a dead owner (whose key the caller holds) and forget it."""
        with self._conn.transaction():
            n = self._execute(
                TAKE_BACK, [f"taken back at {time.strftime('%H:%M:%S')}: cluster {dead:x} "
                            f"died (its database session ended)", dead]).rowcount
            self._execute("DELETE FROM pgbroker_cluster WHERE owner = %s", [dead])
        return n

    def release_key(self, key: int) -> None:
        self._execute("SELECT pg_advisory_unlock(%s)", [key])
