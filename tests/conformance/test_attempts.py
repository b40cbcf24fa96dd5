"""No job is charged an attempt it never started (issue 19; tests/pgbroker/test_worker_exits.py
for pgbroker alone): on the ATTEMPTS cluster (conftest.py: one worker, recycled after every
task, `timeout` 1 s, one attempt per job) a job waiting behind a recycle or a timeout runs
once and succeeds."""

from __future__ import annotations

import pytest
from django.db import transaction
from django_q.models import Failure, Success
from django_q.tasks import async_task

from pgbroker.models import Job
from tests.conformance.conftest import ATTEMPTS, TASKS, runs, unique

# conformance: its own run in make test's second pass (it mostly waits on its clusters)
pytestmark = [pytest.mark.cluster, pytest.mark.any_broker, pytest.mark.conformance]


def parked() -> int:
    return Job.objects.filter(queue=ATTEMPTS).parked().count()


def test_a_recycled_worker_charges_nothing_to_the_jobs_behind_it(clusters):
    cluster = clusters.attempts
    keys = [unique(f"recycled{i}") for i in range(6)]
    with transaction.atomic():  # one claim: pgbroker queues the next jobs in the worker's pipe
        tids = [async_task(f"{TASKS}.run", key, cluster=ATTEMPTS) for key in keys]
    cluster.settle(lambda: Success.objects.filter(id__in=tids).count() == len(tids)
                   or Failure.objects.filter(id__in=tids).exists() or parked(),
                   "every job to finish", timeout=60)
    assert parked() == 0
    assert not Failure.objects.filter(id__in=tids).exists()
    assert [runs(key) for key in keys] == [1] * len(keys)
    cluster.wait_drained()


def test_a_timeout_charges_only_the_job_that_timed_out(clusters):
    cluster = clusters.attempts
    slow = unique("slow")
    keys = [unique(f"behind{i}") for i in range(3)]
    with transaction.atomic():
        slow_id = async_task(f"{TASKS}.nap", slow, 5, cluster=ATTEMPTS)
        tids = [async_task(f"{TASKS}.run", key, cluster=ATTEMPTS) for key in keys]
    cluster.settle(lambda: Success.objects.filter(id__in=tids).count() == len(tids)
                   and Failure.objects.filter(id=slow_id).exists(),
                   "the jobs behind the slow one, and its timeout", timeout=60)
    cluster.wait_drained()
    failure = Failure.objects.get(id=slow_id)
    assert "TimeoutException" in failure.result
    assert failure.attempt_count == 1
    assert [runs(key) for key in keys] == [1] * len(keys)
    assert not Failure.objects.filter(id__in=tids).exists()
