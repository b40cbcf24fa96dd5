"""Operations a person asks for on the queue (the admin's actions call these)."""

from __future__ import annotations

from django.db import connections, transaction
from django.db.models.functions import Now

from pgbroker.broker import CHANNEL, alias
from pgbroker.models import Job, JobQuerySet


def retry_parked(*, jobs: JobQuerySet, by: str = "") -> int:
    """Give parked jobs a fresh set of attempts, due now. Jobs that are no longer parked (a
    double submit, another person) are left alone. Returns how many were retried."""
    note = f"retried from the admin{f' by {by}' if by else ''} after: "
    with transaction.atomic(using=alias()):
        ids = list(jobs.parked().select_for_update(skip_locked=True).values_list("pk", flat=True))
        for job in Job.objects.filter(pk__in=ids):
            Job.objects.filter(pk=job.pk).update(
                parked_at=None, attempts=0, run_at=Now(), owner=None,
                last_error=(note + job.last_error)[:4000])
        if ids:
            with connections[alias()].cursor() as cur:  # wakes an idle cluster at commit
                cur.execute("SELECT pg_notify(%s, queue) FROM pgbroker_job WHERE id = ANY(%s) "
                            "GROUP BY queue", [CHANNEL, ids])
    return len(ids)
