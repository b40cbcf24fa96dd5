"""Writing what the workers finished: django-q2's result rows, acknowledgements, retries and
parked jobs, in one transaction per batch, on a connection of the writer's own."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from django_q.models import Task

from pgbroker.connection import connection_params

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


@dataclass
class Outcome:
    """What one flush writes, in one transaction."""

    results: list[bytes] = field(default_factory=list)  # django_q_task rows, COPY lines
    done: list[int | str] = field(default_factory=list)
    # id, delay, attempts given back, error
    retry: list[tuple[int | str, float, int, str]] = field(default_factory=list)
    park: list[tuple[int | str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.results or self.done or self.retry or self.park)

    def __len__(self) -> int:
        """Jobs settled by it."""
        return len(self.done) + len(self.retry) + len(self.park)

    def requeues(self) -> bool:
        return bool(self.retry)

    def ids(self) -> set[int | str]:
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


def _copy_text(value: object) -> str:
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    return (str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def result_line(row: tuple[object, ...]) -> bytes:
    """One result row in COPY's text format. Workers build these, so the dispatcher only joins
    bytes."""
    return ("\t".join(_copy_text(v) for v in row) + "\n").encode()


class Writer:
    """Writes finished jobs on a connection of its own: results, acknowledgements, retries
    and parked jobs, each batch in one transaction. Its commits are asynchronous
    (synchronous_commit off) unless `synchronous`: a database crash can lose the last
    acknowledgements of a few milliseconds, and those jobs run again (at least once, as
    always; never lost). A Redis source's writer commits synchronously: its jobs leave Redis
    right after."""

    def __init__(self, *, alias: str, owner: int, synchronous: bool = False,
                 name: str = "pgbroker writer") -> None:
        self.owner = owner
        self.name = name  # its application_name
        self.params = connection_params(alias)
        if not synchronous:
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
                                        application_name=self.name)
            self.conn.execute(RESULTS_TABLE)

    def flush(self, outcome: Outcome) -> None:
        self.connect()
        assert self.conn is not None
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
