"""What /metrics reads, each look cheap at a year of history (docs/metrics.md#what-each-look-costs):

- the queue's states per queue, from the queue table (it holds unfinished jobs only) through
  the queryset's own state rules (pgbroker.models.JobQuerySet) and its partial indexes;
- the jobs finished recently, from django-q2's result rows: the newest ones by their `stopped`
  index, a bounded number (METRICS_WINDOW_JOBS), never a count per job;
- counters PostgreSQL keeps anyway (`pg_stat_user_tables`: rows inserted, deleted);
- the clusters alive, from what they publish every second;
- row counts of short tables per value of their choice fields (METRICS_ROW_COUNTS).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.db import connection
from django.db.models import Count, Min
from django.db.models.functions import Now
from django_q.conf import Conf
from django_q.models import OrmQ, Task

from common.db import db_now
from jobs.selectors import queue_counts, uses_pgbroker
from pgbroker.models import Cluster, Job

# Seconds: run times and waits (buckets of the histograms, each an upper bound)
BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                              30.0, 60.0, 300.0)
ALIVE_SECONDS = 10  # a cluster that published nothing for this long is not counted


@dataclass(frozen=True)
class QueueState:
    queue: str
    pending: int = 0   # due, waiting for a cluster to claim it
    claimed: int = 0   # held by a cluster: running, or waiting in a worker's pipe
    retrying: int = 0  # waiting for its retry (backoff)
    parked: int = 0    # given up on, kept for a person
    oldest_pending_seconds: float = 0.0  # how long the oldest pending job has been due


def queues() -> list[QueueState]:
    """Each queue of the PostgreSQL store (the configured one always, empty or not)."""
    found: dict[str, dict] = {Conf.CLUSTER_NAME: {}}
    if not uses_pgbroker():  # django-q2's ORM broker: a lease, no retry or parked state
        c = queue_counts()
        age = OrmQ.objects.filter(lock__lte=Now()).aggregate(t=Now() - Min("lock"))["t"]
        return [QueueState(Conf.CLUSTER_NAME, pending=c.queued - c.leased, claimed=c.leased,
                           oldest_pending_seconds=max(0.0, age.total_seconds()) if age else 0.0)]
    # the age on the clock the state rules use (Now(): the statement's time)
    for queue, n, age in (Job.objects.ready().values("queue").order_by()
                          .annotate(n=Count("id"), age=Now() - Min("run_at"))
                          .values_list("queue", "n", "age")):
        found.setdefault(queue, {}).update(
            pending=n, oldest_pending_seconds=max(0.0, age.total_seconds()))
    for state, rows in (("claimed", Job.objects.claimed()), ("retrying", Job.objects.retrying()),
                        ("parked", Job.objects.parked())):
        for queue, n in rows.values("queue").order_by().annotate(n=Count("id")).values_list(
                "queue", "n"):
            found.setdefault(queue, {})[state] = n
    return [QueueState(queue, **values) for queue, values in sorted(found.items())]


@dataclass
class Histogram:
    """Counts per bucket (not cumulative; the last one past the highest bound), and the sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def add(self, bucket: int, n: int, total: float) -> None:
        self.counts[bucket] += n
        self.total += total

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """[(upper bound as Prometheus writes it, jobs at or below it)], +Inf last."""
        bounds = [*(repr(float(b)) for b in BUCKETS), "+Inf"]
        return list(zip(bounds, itertools.accumulate(self.counts), strict=True))


def _bucketed(sql: str, params: list[Any]) -> dict[tuple, Histogram]:
    """Rows of (key..., bucket, n, sum) -> a histogram per key. `width_bucket` numbers the
    buckets from 0 (at or below the first bound, when bounds are upper bounds: see below)."""
    found: dict[tuple, Histogram] = {}
    with connection.cursor() as cur:
        cur.execute(sql, params)
        for *key, bucket, n, total in cur.fetchall():
            found.setdefault(tuple(key), Histogram()).add(int(bucket), int(n), float(total or 0))
    return found


# width_bucket(x, bounds) counts the bounds <= x: a value equal to a bound would land in the
# bucket above it. Prometheus' buckets are "less than or equal", so the bounds are compared
# from the other side: the number of bounds strictly below x is the bucket.
BUCKET_OF = "(SELECT count(*) FROM unnest(%s::float8[]) AS b WHERE b < {x})"


def claim_waits() -> dict[str, Histogram]:
    """For each job a cluster holds now: how long it had been due when it was claimed, per
    queue (a sample of the last claims; PostgreSQL store only)."""
    if not uses_pgbroker():
        return {}
    wait = "greatest(extract(epoch FROM claimed_at - run_at), 0)"
    found = _bucketed(f"""
        SELECT queue, {BUCKET_OF.format(x=wait)} AS bucket, count(*), sum({wait})
          FROM pgbroker_job
         WHERE owner IS NOT NULL AND parked_at IS NULL AND claimed_at IS NOT NULL
         GROUP BY 1, 2""", [list(BUCKETS)])
    return {key[0]: h for key, h in found.items()}


@dataclass
class Recent:
    """The jobs finished in the last `seconds` (their result rows), per cluster."""

    seconds: float  # the span they cover: the window, or less when capped at `limit`
    finished: dict[tuple[str, bool], int] = field(default_factory=dict)  # (cluster, ok) -> n
    run: dict[str, Histogram] = field(default_factory=dict)  # cluster -> run times


def recent_jobs(*, window: float, limit: int) -> Recent:
    """The newest `limit` result rows of the last `window` seconds (the `stopped` index, read
    backwards: the cost is `limit` rows at most, however many ran): how many finished, how
    many failed, how long they ran. A job retried until it worked has one row: its last."""
    table = Task._meta.db_table
    run = "greatest(extract(epoch FROM stopped - started), 0)"
    with connection.cursor() as cur:
        cur.execute(f"""
            WITH recent AS (
                SELECT coalesce(cluster, '') AS cluster, success, {run} AS run, stopped
                  FROM {table}
                 WHERE stopped >= now() - make_interval(secs => %s)
                 ORDER BY stopped DESC LIMIT %s)
            SELECT cluster, success, {BUCKET_OF.format(x="run")} AS bucket, count(*),
                   sum(run), min(stopped), (SELECT count(*) FROM recent)
              FROM recent GROUP BY 1, 2, 3""", [window, limit, list(BUCKETS)])
        rows = cur.fetchall()
    found = Recent(seconds=window)
    oldest, capped = None, False
    for cluster, ok, bucket, n, total, first, everything in rows:
        found.finished[(cluster, ok)] = found.finished.get((cluster, ok), 0) + int(n)
        found.run.setdefault(cluster, Histogram()).add(int(bucket), int(n), float(total or 0))
        oldest = first if oldest is None else min(oldest, first)
        capped = everything >= limit
    if oldest is not None and capped:
        found.seconds = max(0.001, (db_now() - oldest).total_seconds())
    return found


@dataclass(frozen=True)
class TableCounters:
    inserted: int  # rows ever inserted (since PostgreSQL's statistics were last reset)
    deleted: int


def queue_table_counters() -> TableCounters:
    """The PostgreSQL queue's rows inserted (jobs enqueued) and deleted (jobs done and
    acknowledged, or deleted by a person), as PostgreSQL counts them for every table anyway:
    monotonic, free, and up to a second or so behind (its statistics are flushed then)."""
    table = (Job if uses_pgbroker() else OrmQ)._meta.db_table
    with connection.cursor() as cur:
        cur.execute("SELECT coalesce(n_tup_ins, 0), coalesce(n_tup_del, 0) "
                    "FROM pg_stat_user_tables WHERE relid = to_regclass(%s)", [table])
        row = cur.fetchone()
    return TableCounters(*(int(v) for v in row)) if row else TableCounters(0, 0)


@dataclass(frozen=True)
class Workers:
    clusters: int = 0
    busy: int = 0  # running a job now
    idle: int = 0


def workers_of(clusters: Sequence[dict]) -> Workers:
    """From the clusters' published snapshots: [{"workers": [{"pid", "job", ...}]}]."""
    busy = idle = 0
    for cluster in clusters:
        for w in cluster.get("workers") or []:
            if w.get("pid") is None:  # the dispatcher's buffer, not a worker
                continue
            if w.get("job") is not None:
                busy += 1
            else:
                idle += 1
    return Workers(clusters=len(clusters), busy=busy, idle=idle)


def postgres_workers() -> Workers:
    """The PostgreSQL store's clusters that published in the last ALIVE_SECONDS."""
    rows = (Cluster.objects.filter(seen_at__gte=Now() - timedelta(seconds=ALIVE_SECONDS))
            .values_list("workers", flat=True))
    return workers_of([{"workers": w} for w in rows])


def row_counts(model: str, fields: Sequence[str]) -> dict[tuple[str, ...], int]:
    """Rows of `model` ("app.Model") per combination of `fields` values: every combination of
    the fields' choices, 0 when none (a series that exists before its first row)."""
    Model = apps.get_model(model)
    choices = [[str(v) for v, _ in Model._meta.get_field(f).choices or []] for f in fields]
    found = {combo: 0 for combo in itertools.product(*choices)}
    rows = Model._default_manager.order_by().values(*fields).annotate(n=Count("pk"))
    for *values, n in rows.values_list(*fields, "n"):
        key = tuple(str(v) for v in values)
        found[key] = found.get(key, 0) + n
    return found

