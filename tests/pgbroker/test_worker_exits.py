"""A worker that ends itself between jobs (a recycle, or after a job that timed out) never
started what waits in its pipe: those jobs go back to the queue with no attempt charged.

Found in issue 19: after a timeout or a recycle, the next job in the pipe was charged an
attempt ("reincarnated worker after death (exit code 0)"), and with few attempts it was
parked without ever running.
"""

from __future__ import annotations

import pytest
from django.db import transaction
from django_q.models import Success
from django_q.tasks import async_task

from jobs.selectors import uses_pgbroker
from pgbroker.models import Job
from tests.helpers import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.beside_lab,
              pytest.mark.skipif(not uses_pgbroker(), reason="pgbroker's pipes and attempts")]


def test_a_recycled_worker_charges_nothing_to_the_jobs_behind_it(transactional_db,
                                                                  start_process):
    # one worker, recycled after every job, one attempt each: a phantom attempt parks a job
    cluster = start_process("qcluster", ready="running.", Q_WORKERS="1", Q_RECYCLE="1",
                            Q_MAX_ATTEMPTS="1", JOB_MAX_ATTEMPTS="1")
    n = 8
    with transaction.atomic():  # one claim: the next jobs wait in the worker's pipe
        for i in range(n):
            async_task("math.floor", i + 0.5)
    wait_until(lambda: Success.objects.count() == n or Job.objects.parked().exists(),
               timeout=60, message=lambda: "the jobs to finish:\n" + cluster.log()[-3000:])
    assert not Job.objects.parked().exists(), cluster.log()[-3000:]
    assert Success.objects.count() == n
    assert "ended itself (recycled): handing back" in cluster.log()


def test_a_timeout_charges_only_the_job_that_timed_out(transactional_db, start_process):
    cluster = start_process("qcluster", ready="running.", Q_WORKERS="1", Q_TIMEOUT="1",
                            Q_MAX_ATTEMPTS="1", JOB_MAX_ATTEMPTS="1")
    with transaction.atomic():
        async_task("time.sleep", 5, task_name="slow")  # times out after 1 s: parked
        for i in range(3):
            async_task("math.floor", i + 0.5)
    wait_until(lambda: Success.objects.filter(func="math.floor").count() == 3, timeout=60,
               message=lambda: "the jobs behind it to run:\n" + cluster.log()[-3000:])
    wait_until(lambda: Job.objects.parked().exists(), timeout=30, message="the slow one")
    (parked,) = Job.objects.parked()  # the slow one alone, on its one attempt
    assert "TimeoutException" in parked.last_error
    assert parked.attempts == 1
