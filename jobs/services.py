"""Job bookkeeping shared by every task: attempt counting, poison-job parking, housekeeping."""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from faults.services import scoped
from jobs.models import JobRun

logger = logging.getLogger(__name__)
T = TypeVar("T")

PARKED = "parked after {attempts} attempts: {key}"


def begin_attempt(*, key: str, func: str, kwargs: dict | None = None) -> JobRun:
    """Count one attempt of `key`, committed before the job does anything else.

    Returns the ledger row; its `state` tells the caller whether to go on ("pending"), skip
    ("done") or stop ("parked").
    """
    limit = settings.JOB_MAX_ATTEMPTS
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO jobs_jobrun (key, func, kwargs, attempts, last_pid, created_at,
                                     last_started_at, last_error)
            VALUES (%s, %s, %s, 1, %s, now(), now(), '')
            ON CONFLICT (key) DO UPDATE
               SET attempts = jobs_jobrun.attempts
                              + CASE WHEN jobs_jobrun.finished_at IS NULL
                                      AND jobs_jobrun.parked_at IS NULL THEN 1 ELSE 0 END,
                   last_pid = EXCLUDED.last_pid, last_started_at = now()
            RETURNING id
            """,
            [key, func, json.dumps(kwargs or {}), os.getpid()],
        )
        (pk,) = cur.fetchone()
    run = JobRun.objects.get(pk=pk)
    if run.state == "pending" and run.attempts > limit:
        JobRun.objects.filter(pk=pk).update(parked_at=timezone.now())
        run.refresh_from_db()
        logger.error(PARKED.format(attempts=run.attempts - 1, key=key))
    return run


def run_job(
    *, key: str, func: str, kwargs: dict, body: Callable[[], T], fault_scope: str | None = None
):
    """Run `body` as one attempt of the logical job `key`.

    The attempt is counted before `body` runs. A finished job is not run again (a duplicate
    delivery); a parked one is not run at all. Errors are recorded and re-raised so django-q2
    retries the task.
    """
    if connection.in_atomic_block:
        raise RuntimeError("run_job must not run inside a transaction: attempts must commit")
    run = begin_attempt(key=key, func=func, kwargs=kwargs)
    if run.state == "done":
        logger.info("job %s already done: skipping duplicate delivery", key)
        return "already done"
    if run.state == "parked":
        return PARKED.format(attempts=run.attempts, key=key)
    try:
        with scoped(fault_scope):
            result = body()
    except BaseException as e:  # django-q2's TimeoutException is a SystemExit
        error = "".join(traceback.format_exception_only(type(e), e)).strip()[:2000]
        # The last attempt: park it now. django-q2 gives up after the same number of recorded
        # failures (Q_MAX_ATTEMPTS) and would never deliver the job again to be parked.
        last = run.attempts >= settings.JOB_MAX_ATTEMPTS
        JobRun.objects.filter(pk=run.pk).update(
            last_error=error, parked_at=timezone.now() if last else None)
        if last:
            logger.error(PARKED.format(attempts=run.attempts, key=key))
        raise
    JobRun.objects.filter(pk=run.pk).update(finished_at=timezone.now())
    return result


def retry_parked(*, run: JobRun) -> None:
    """Give a parked job a fresh set of attempts and enqueue it again."""
    from django_q.tasks import async_task

    with transaction.atomic():
        JobRun.objects.filter(pk=run.pk).update(parked_at=None, attempts=0, last_error="")
        async_task(run.func, **run.kwargs)


def cleanup_task_results(*, keep_days: int | None = None) -> int:
    """Delete django-q2 Success rows older than keep_days (save_limit is 0: nothing prunes)."""
    from django_q.models import Success

    days = settings.TASK_RESULTS_KEEP_DAYS if keep_days is None else keep_days
    with transaction.atomic():
        cutoff = timezone.now() - timedelta(days=days)
        deleted, _ = Success.objects.filter(stopped__lt=cutoff).delete()
    return deleted


@dataclass(frozen=True)
class ClusterRun:
    done: bool  # False: no cluster finished it within the wait (it stays queued)
    ok: bool = False
    result: object = None


def run_on_cluster(func: str, *, wait_seconds: float | None = None) -> ClusterRun:
    """Enqueue `func` and wait a little for it to finish.

    The admin's "do it now" buttons use this rather than running the work in the web
    process, where an armed crash fault would take the web server down with it.
    """
    from django_q.tasks import async_task, fetch

    wait = settings.CLUSTER_WAIT_SECONDS if wait_seconds is None else wait_seconds
    task = fetch(async_task(func), wait=int(wait * 1000))
    if task is None:
        return ClusterRun(done=False)
    return ClusterRun(done=True, ok=bool(task.success), result=task.result)
