"""Reads of the queue for the admin, the dashboard and commands: every job with its state and,
for a job that is not running, why, in words."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone
from django_q.conf import Conf
from django_q.signing import SignedPackage

from pgbroker.models import Cluster, Job


class State(models.TextChoices):
    """A job as a person sees it: the row's state plus what its cluster says it is doing."""

    RUNNING = "running"
    PREFETCHED = "prefetched"
    ORPHANED = "orphaned"
    READY = "ready"
    RETRYING = "retrying"
    PARKED = "parked"


@dataclass(frozen=True)
class JobView:
    id: int
    queue: str
    func: str
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: str
    why: str
    attempts: int
    run_at: datetime
    priority: int = 0
    worker_pid: int | None = None
    since: float | None = None


def decode(payload: str) -> dict[str, Any] | None:
    try:
        task: dict[str, Any] = SignedPackage.loads(payload)
        return task
    except Exception:  # signed with another key or not a package: shown, not read
        return None


def clock(when: datetime | float) -> str:
    if isinstance(when, int | float):
        when = datetime.fromtimestamp(when, tz=timezone.get_current_timezone())
    return timezone.localtime(when).strftime("%H:%M:%S")


Running = tuple[int | None, float | None, str]  # worker pid, since, "running"/"prefetched"


def _running(clusters: list[Cluster]) -> dict[int, Running]:
    """job id -> where it runs, from the clusters' snapshots."""
    where: dict[int, Running] = {}
    for cluster in clusters:
        for w in cluster.workers or []:
            if w.get("job"):
                where[w["job"]] = (w.get("pid"), w.get("since"), State.RUNNING)
            for job_id in w.get("next") or []:
                where.setdefault(job_id, (w.get("pid"), None, State.PREFETCHED))
    return where


def explain(job: Job, *, clusters: dict[int, Cluster], where: dict[int, Running],
            now: datetime) -> JobView:
    task = decode(job.payload) or {}
    max_attempts = Conf.MAX_ATTEMPTS
    of = f" of {max_attempts}" if max_attempts > 0 else ""
    pid: int | None = None
    since: float | None = None
    state: str
    if job.parked_at is not None:
        state = State.PARKED
        why = f"parked at {clock(job.parked_at)} after {job.attempts} attempt(s): " \
              f"{(job.last_error or '').strip().splitlines()[0] if job.last_error else ''}"
    elif job.owner is not None:
        cluster = clusters.get(job.owner)
        pid, since, state = where.get(job.id, (None, None, State.PREFETCHED))
        if cluster is None:
            state = State.ORPHANED
            why = "its cluster is gone: another cluster takes it back within seconds"
        elif state == State.RUNNING:
            why = f"running in worker {pid}" + (
                f" since {clock(since)} ({time.time() - since:.0f} s)" if since else "")
        else:
            why = f"claimed by cluster {cluster.owner:x} (pid {cluster.pid} on " \
                  f"{cluster.host}), waiting for a free worker"
    elif job.run_at > now:
        state = State.RETRYING
        why = f"retry at {clock(job.run_at)}, attempt {job.attempts + 1}{of}"
    else:
        state = State.READY
        listening = [c for c in clusters.values() if c.queue == job.queue]
        why = (f"ready since {clock(job.run_at)}: next for a free worker" if listening
               else f"ready since {clock(job.run_at)}: no live worker (is a cluster running?)")
    if job.last_error and state in (State.READY, State.RETRYING):
        why += f"; last: {job.last_error.strip().splitlines()[0][:200]}"
    return JobView(id=job.pk, queue=job.queue, func=str(task.get("func", "?")),
                   name=str(task.get("name", "")), args=tuple(task.get("args", ())),
                   kwargs=dict(task.get("kwargs", {})), state=state, why=why,
                   attempts=job.attempts, run_at=job.run_at, priority=job.priority,
                   worker_pid=pid, since=since)


def _clusters() -> tuple[dict[int, Cluster], dict[int, Running]]:
    clusters = {c.owner: c for c in Cluster.objects.all()}
    return clusters, _running(list(clusters.values()))


_snapshot: tuple[float, tuple[dict[int, Cluster], dict[int, Running]]] = (0.0, ({}, {}))


def view(job: Job) -> JobView:
    """One job explained, with the clusters as read at most a second ago (list pages)."""
    global _snapshot
    if time.monotonic() - _snapshot[0] > 1.0:
        _snapshot = (time.monotonic(), _clusters())
    clusters, where = _snapshot[1]
    return explain(job, clusters=clusters, where=where, now=timezone.now())


def job_views(jobs: QuerySet[Job] | None = None) -> list[JobView]:
    clusters, where = _clusters()
    qs = (jobs if jobs is not None else Job.objects.all()).order_by("id")
    now = timezone.now()
    return [explain(j, clusters=clusters, where=where, now=now) for j in qs]


@dataclass(frozen=True)
class Counts:
    pending: int   # everything that will still run
    claimed: int   # running or prefetched by a cluster
    retrying: int  # waiting for a retry
    parked: int


def counts() -> Counts:
    c = Job.objects.aggregate(
        pending=Count("id", filter=Q(parked_at__isnull=True)),
        claimed=Count("id", filter=Q(parked_at__isnull=True, owner__isnull=False)),
        retrying=Count("id", filter=Q(parked_at__isnull=True, owner__isnull=True,
                                      run_at__gt=Now())),
        parked=Count("id", filter=Q(parked_at__isnull=False)),
    )
    return Counts(**c)
