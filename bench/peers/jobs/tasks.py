"""The benchmark's job, once per engine: the same body (`run_body`) behind each queue's API."""

from __future__ import annotations

import os
import time

from django_tasks import task as django_task
from procrastinate.contrib.django import app as procrastinate_app

from bench.peers.celery_app import app as celery_app
from bench.peers.jobs.models import Execution

Q_NOOP = "bench.peers.jobs.tasks.q_noop"  # django-q2 names its functions by dotted path
Q_NOTHING = "bench.peers.jobs.tasks.q_nothing"


def nothing(key: str) -> None:
    """The throughput test's job: no work at all, so the queue's own cost is what is timed."""


def run_body(key: str, sleep: float = 0.0) -> None:
    """Record this run (its own commit, first thing), then sleep `sleep` seconds."""
    started = time.time()
    if not sleep:
        Execution.objects.create(job_key=key, pid=os.getpid(), started_at=started,
                                 finished_at=started)
        return
    row = Execution.objects.create(job_key=key, pid=os.getpid(), started_at=started)
    time.sleep(sleep)
    Execution.objects.filter(pk=row.pk).update(finished_at=time.time())


def q_noop(key: str, sleep: float = 0.0) -> None:
    run_body(key, sleep)


def q_nothing(key: str) -> None:
    nothing(key)


@procrastinate_app.task(name="peer_nothing")
def p_nothing(key: str) -> None:
    nothing(key)


@django_task()
def t_nothing(key: str) -> None:
    nothing(key)


@celery_app.task(name="peer_c_nothing")
def c_nothing(key: str) -> None:
    nothing(key)


@procrastinate_app.task(name="peer_noop")
def p_noop(key: str, sleep: float = 0.0) -> None:
    run_body(key, sleep)


@django_task()
def t_noop(key: str, sleep: float = 0.0) -> None:
    run_body(key, sleep)


@celery_app.task(name="peer_c_noop")
def c_noop(key: str, sleep: float = 0.0) -> None:
    run_body(key, sleep)


# procrastinate's documented recipe for jobs left in `doing` by a killed worker
# (docs/howto/production/retry_stalled_jobs.md), deferred every 5 s instead of every 10 min:
# the 6th cron column is seconds (docs/howto/advanced/cron.md).
@procrastinate_app.periodic(cron="* * * * * */5")
@procrastinate_app.task(queueing_lock="retry_stalled_jobs", pass_context=True)
async def retry_stalled_jobs(context, timestamp):
    stalled_jobs = await procrastinate_app.job_manager.get_stalled_jobs()
    for job in stalled_jobs:
        await procrastinate_app.job_manager.retry_job(job)
