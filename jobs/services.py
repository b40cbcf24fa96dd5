"""The job ledger shared by every task: attempt counting, poison-job parking, retrying."""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from faults.services import scoped
from jobs.models import JobRun, JobRunQuerySet, RunState
from jobs.selectors import uses_pgbroker
from pgbroker.connection import no_slot

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
    if run.state == RunState.PENDING and run.attempts > limit:
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
    if run.state == RunState.DONE:
        logger.info("job %s already done: skipping duplicate delivery", key)
        return "already done"
    if run.state == RunState.PARKED:
        return PARKED.format(attempts=run.attempts, key=key)
    try:
        with scoped(fault_scope):
            result = body()
    except BaseException as e:  # django-q2's TimeoutException is a SystemExit
        error = "".join(traceback.format_exception_only(type(e), e)).strip()[:2000]
        # a connection the job needed was refused: not the job's fault. pgbroker gives the
        # queue's attempt back too; the stock ORM broker counts it, so the ledger does as well
        if no_slot(e) and uses_pgbroker():
            JobRun.objects.filter(pk=run.pk).update(attempts=F("attempts") - 1,
                                                    last_error=error)
            raise
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


def retry_parked(*, runs: JobRunQuerySet) -> int:
    """Give the parked jobs among `runs` a fresh set of attempts and enqueue each again. Rows
    are re-read locked: a job no longer parked (a second click, another person) is left
    alone, so a double submit enqueues nothing twice. Returns how many were retried."""
    with transaction.atomic():
        parked = list(runs.parked().select_for_update())
        for run in parked:
            JobRun.objects.filter(pk=run.pk).update(parked_at=None, attempts=0, last_error="")
            async_task(run.func, **run.kwargs)
    return len(parked)
