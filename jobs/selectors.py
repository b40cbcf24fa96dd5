"""The queue as the rest of the project sees it, whichever broker carries the jobs
(pgbroker by default, django-q2's ORM broker with Q_BROKER=orm)."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone
from django_q.models import Failure, OrmQ

from jobs.models import JobRun
from pgbroker import selectors as pg
from pgbroker.broker import configured
from pgbroker.models import Job


def uses_pgbroker() -> bool:
    return configured()


@dataclass(frozen=True)
class QueueCounts:
    queued: int      # jobs the cluster will still run (waiting, claimed, or between retries)
    leased: int      # claimed by a cluster: running or prefetched
    failed: int      # django-q2 Failure rows
    parked: int      # our own poison-job ledger: gave up after JOB_MAX_ATTEMPTS
    queue_parked: int = 0  # pgbroker: jobs the queue itself gave up on, kept for a person
    retrying: int = 0      # pgbroker: waiting for their retry (backoff)
    broker: str = "orm"    # "pgbroker" or "orm": which admin page lists the jobs


def queue_counts() -> QueueCounts:
    failed = Failure.objects.count()
    parked = JobRun.objects.filter(parked_at__isnull=False, finished_at__isnull=True).count()
    if uses_pgbroker():
        c = pg.counts()
        return QueueCounts(queued=c.pending, leased=c.claimed, failed=failed, parked=parked,
                           queue_parked=c.parked, retrying=c.retrying, broker="pgbroker")
    now = timezone.now()
    return QueueCounts(queued=OrmQ.objects.count(),
                       leased=OrmQ.objects.filter(lock__gt=now).count(), failed=failed,
                       parked=parked)


@dataclass(frozen=True)
class QueuedTask:
    id: int
    func: str
    kwargs: dict
    parked: bool = False


def queued_tasks(*, include_parked: bool = False) -> list[QueuedTask]:
    """Every task still in the queue, decoded (payloads signed with another key are skipped)."""
    if uses_pgbroker():
        jobs = Job.objects.all() if include_parked else Job.objects.unparked()
        return [QueuedTask(id=v.id, func=v.func, kwargs=v.kwargs, parked=v.state == pg.State.PARKED)
                for v in pg.job_views(jobs) if v.func != "?"]
    tasks = []
    for row in OrmQ.objects.order_by("id"):
        try:
            task = row.task
        except Exception:  # a payload signed with another key: not ours to read
            continue
        tasks.append(QueuedTask(id=row.pk, func=str(task.get("func")),
                                kwargs=dict(task.get("kwargs", {}))))
    return tasks


def queue_drained() -> bool:
    """Nothing left for a cluster to run (jobs the queue parked do not count)."""
    if uses_pgbroker():
        return not Job.objects.unparked().exists()
    return not OrmQ.objects.exists()
