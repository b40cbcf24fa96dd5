"""Housekeeping django-q2 does not do for itself."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone


def cleanup_task_results(*, keep_days: int | None = None) -> int:
    """Delete django-q2 Success rows older than keep_days (save_limit is 0: nothing prunes)."""
    from django_q.models import Success

    days = settings.TASK_RESULTS_KEEP_DAYS if keep_days is None else keep_days
    with transaction.atomic():
        cutoff = timezone.now() - timedelta(days=days)
        deleted, _ = Success.objects.filter(stopped__lt=cutoff).delete()
    return deleted
