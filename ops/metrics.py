"""The metrics /metrics serves, computed when scraped (docs/metrics.md lists each one).

Nothing is counted per job: every number is read, at scrape time, from what the project keeps
anyway (the queue table, django-q2's result rows, the outbox, the tallies, PostgreSQL's own
table statistics, the clusters' published snapshots, Redis, the dashboard's checks). The
clusters' hot path is untouched: no django-q2 `post_execute` listener (one would send every
finished task back to the dispatcher whole, the slow path), no counter in a worker.

Each source is read on its own: one that fails (Redis down is not a failure: it is a value)
leaves its metrics out, says so in `reliable_metrics_source_up{source}`, and the rest is
served. `reliable_metrics_source_seconds{source}` is what each look cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django_q.conf import Conf
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from dashboard import registry, tallies
from dashboard.registry import Snapshot, Status
from jobs.models import JobRun
from jobs.selectors import redis_status
from ops import selectors
from outbox.models import PUBLISHED_TALLY
from outbox.selectors import outbox_counts

logger = logging.getLogger(__name__)
PG, REDIS = "postgres", "redis"
QUEUE_JOBS = ("Jobs in a queue now, by state: pending (due, not claimed), claimed (running or "
              "in a worker's pipe), retrying (waiting for a retry), parked (given up on, kept "
              "for a person)")


class Families:
    """The families of one scrape, by name: two sources may add to one (the queue's jobs
    come from PostgreSQL and from Redis), and each family is written once."""

    def __init__(self) -> None:
        self.found: dict[str, Metric] = {}

    def _get(self, kind: type[Any], name: str, doc: str, labels: list[str]) -> Any:
        if name not in self.found:
            self.found[name] = kind(name, doc, labels=labels)
        return self.found[name]

    def gauge(self, name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        family: GaugeMetricFamily = self._get(GaugeMetricFamily, name, doc, labels)
        return family

    def counter(self, name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
        family: CounterMetricFamily = self._get(CounterMetricFamily, name, doc, labels)
        return family

    def histogram(self, name: str, doc: str, labels: list[str]) -> GaugeHistogramMetricFamily:
        family: GaugeHistogramMetricFamily = self._get(GaugeHistogramMetricFamily, name, doc,
                                                       labels)
        return family


def _histogram(family: GaugeHistogramMetricFamily, labels: list[str],
               h: selectors.Histogram) -> None:
    family.add_metric(labels, h.cumulative(), gsum_value=h.total)


def clusters() -> list[str]:
    """The configured clusters' names, as their result rows say them (`cluster`)."""
    alt = settings.Q_CLUSTER.get("ALT_CLUSTERS")
    return [Conf.PREFIX, *(alt if isinstance(alt, dict) else {})]


# --- the sources ------------------------------------------------------------------------------


def postgres_queue(out: Families) -> None:
    jobs = out.gauge("reliable_queue_jobs", QUEUE_JOBS, ["store", "queue", "state"])
    oldest = out.gauge("reliable_queue_oldest_pending_seconds",
                       "How long the oldest pending job has been due (0: none pending)",
                       ["store", "queue"])
    for q in selectors.queues():
        for state in ("pending", "claimed", "retrying", "parked"):
            jobs.add_metric([PG, q.queue, state], getattr(q, state))
        oldest.add_metric([PG, q.queue], q.oldest_pending_seconds)
    waits = out.histogram("reliable_queue_claim_wait_seconds",
                          "The jobs claimed now: how long each had been due when a cluster "
                          "claimed it (a sample of the latest claims)", ["queue"])
    found = selectors.claim_waits()
    for queue in sorted({Conf.CLUSTER_NAME, *found}):
        _histogram(waits, [queue], found.get(queue, selectors.Histogram()))
    counters = selectors.queue_table_counters()
    out.counter("reliable_queue_enqueued", "Jobs enqueued into the PostgreSQL queue (its "
                "table's inserted rows, as PostgreSQL counts them since its statistics were "
                "reset)", ["store"]).add_metric([PG], counters.inserted)
    out.counter("reliable_queue_acknowledged", "Jobs done and acknowledged in the PostgreSQL "
                "queue, or deleted by a person (its table's deleted rows)",
                ["store"]).add_metric([PG], counters.deleted)
    _workers(out, PG, selectors.postgres_workers())
    out.gauge("reliable_job_ledger_parked", "Jobs the job ledger parked after "
              "JOB_MAX_ATTEMPTS attempts (jobs.models.JobRun), kept for a person",
              []).add_metric([], JobRun.objects.parked().count())


def _workers(out: Families, store: str, w: selectors.Workers) -> None:
    out.gauge("reliable_clusters", "Clusters alive (they published in the last "
              f"{selectors.ALIVE_SECONDS} s)", ["store"]).add_metric([store], w.clusters)
    workers = out.gauge("reliable_workers", "The alive clusters' workers, busy (running a "
                        "job) or idle", ["store", "state"])
    workers.add_metric([store, "busy"], w.busy)
    workers.add_metric([store, "idle"], w.idle)


def redis_queue(out: Families) -> None:
    status = redis_status()
    out.gauge("reliable_redis_up", "1 when Redis answers", []).add_metric([], int(status.up))
    out.gauge("reliable_redis_refusing_writes", "1 when Redis refuses writes (no replica for "
              "min-replicas-to-write)", []).add_metric([], int(status.refusing_writes))
    if not status.up:
        return
    jobs = out.gauge("reliable_queue_jobs", QUEUE_JOBS, ["store", "queue", "state"])
    for state, n in (("pending", status.depth), ("claimed", status.in_flight),
                     ("parked", status.parked)):
        jobs.add_metric([REDIS, settings.REDIS_CLUSTER, state], n or 0)
    _workers(out, REDIS, selectors.workers_of(list(status.clusters)))


def finished_jobs(out: Families) -> None:
    window = settings.METRICS_WINDOW_SECONDS
    recent = selectors.recent_jobs(window=window, limit=settings.METRICS_WINDOW_JOBS)
    out.gauge("reliable_jobs_window_seconds", "The span the reliable_jobs_finished and "
              f"reliable_job_run_seconds figures cover: METRICS_WINDOW_SECONDS ({window:g}), "
              "or less when more than METRICS_WINDOW_JOBS finished in it",
              []).add_metric([], recent.seconds)
    finished = out.gauge("reliable_jobs_finished", "Jobs finished in the window, by cluster "
                         "and outcome (django-q2's result rows; a job retried until it worked "
                         "counts once, as a success)", ["cluster", "outcome"])
    runs = out.histogram("reliable_job_run_seconds", "How long the jobs finished in the "
                         "window ran (started to stopped), by cluster", ["cluster"])
    names = sorted({*clusters(), *(c for c, _ in recent.finished), *recent.run})
    for cluster in names:
        for ok, outcome in ((True, "success"), (False, "failure")):
            finished.add_metric([cluster, outcome], recent.finished.get((cluster, ok), 0))
        _histogram(runs, [cluster], recent.run.get(cluster, selectors.Histogram()))


def outbox(out: Families) -> None:
    counts = outbox_counts()
    messages = out.gauge("reliable_outbox_messages", "Outbox messages now: pending (to be "
                         "relayed), dead (the relay gave up; a person retries them)", ["state"])
    messages.add_metric(["pending"], counts.pending)
    messages.add_metric(["dead"], counts.dead)
    out.gauge("reliable_outbox_waiting_for_store", "Pending messages whose store (Redis) is "
              "down", []).add_metric([], counts.waiting)
    out.gauge("reliable_outbox_oldest_pending_seconds", "Age of the oldest pending message "
              "(0: none pending)", []).add_metric([], counts.oldest_pending_seconds or 0.0)
    published = tallies.totals(PUBLISHED_TALLY).get(PUBLISHED_TALLY, 0)
    out.counter("reliable_outbox_published", "Messages the relay published, ever (a tally "
                "kept by a trigger; pruning does not lower it)", []).add_metric([], published)


def checks(out: Families) -> None:
    findings = out.gauge("reliable_check_findings", "What each of the dashboard's checks "
                         "finds now (the rows that break it)", ["check"])
    status = out.gauge("reliable_check_status", "Each check's status now: 1 for the one it "
                       "has, 0 for the others (violation: a promise broke)", ["check", "status"])
    for check in registry.checks(Snapshot()):
        findings.add_metric([check.name], check.count)
        for s in Status.values:
            status.add_metric([check.name, s], int(check.status == s))


def row_counts(out: Families) -> None:
    for name, (model, fields) in settings.METRICS_ROW_COUNTS.items():
        family = out.gauge(name, f"{model} rows by {', '.join(fields)}", list(fields))
        for values, n in sorted(selectors.row_counts(model, fields).items()):
            family.add_metric(list(values), n)


SOURCES: dict[str, Callable[[Families], None]] = {
    "postgres": postgres_queue, "redis": redis_queue, "jobs": finished_jobs, "outbox": outbox,
    "checks": checks, "rows": row_counts,
}
_said: set[str] = set()  # sources whose failure was logged (once per process until it works)


class Collector:
    """prometheus_client's custom collector: everything read when `collect()` runs."""

    def collect(self) -> Iterator[Metric]:
        out = Families()
        up = GaugeMetricFamily("reliable_metrics_source_up", "1 when the source's metrics "
                               "were read, 0 when reading them failed (they are left out)",
                               labels=["source"])
        cost = GaugeMetricFamily("reliable_metrics_source_seconds", "What reading the source "
                                 "took in this scrape", labels=["source"])
        for name, source in SOURCES.items():
            start = time.perf_counter()
            part = Families()
            try:
                source(part)
            except Exception as e:  # the other sources are still served
                if name not in _said:
                    _said.add(name)
                    logger.warning("metrics: reading %s failed: %s: %s", name,
                                   type(e).__name__, " ".join(str(e).split())[:300])
                up.add_metric([name], 0)
            else:
                _said.discard(name)
                up.add_metric([name], 1)
                for family in part.found.values():
                    _merge(out, family)
            cost.add_metric([name], time.perf_counter() - start)
        yield from out.found.values()
        yield up
        yield cost


def _merge(out: Families, family: Metric) -> None:
    mine = out.found.get(family.name)
    if mine is None:
        out.found[family.name] = family
    else:
        mine.samples.extend(family.samples)
