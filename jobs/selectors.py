from dataclasses import dataclass

from django.utils import timezone
from django_q.models import Failure, OrmQ

from jobs.models import JobRun


@dataclass(frozen=True)
class QueueCounts:
    queued: int      # rows in django-q2's queue table (waiting or leased)
    leased: int      # claimed by a cluster: running or prefetched (lock in the future)
    failed: int      # django-q2 Failure rows
    parked: int      # our own poison-job ledger: gave up after JOB_MAX_ATTEMPTS


def queue_counts() -> QueueCounts:
    now = timezone.now()
    return QueueCounts(
        queued=OrmQ.objects.count(),
        leased=OrmQ.objects.filter(lock__gt=now).count(),
        failed=Failure.objects.count(),
        parked=JobRun.objects.filter(parked_at__isnull=False, finished_at__isnull=True).count(),
    )
