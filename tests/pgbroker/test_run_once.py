"""`qcluster --run-once` (django-q2's option, on pgbroker's cluster): runs the jobs that are due,
writes their results, and stops by itself; a job not due yet stays queued."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models.functions import Now
from django_q.models import Success
from django_q.tasks import async_task

from jobs.selectors import uses_pgbroker
from pgbroker.models import Job
from tests.helpers import BASE_DIR, subprocess_env

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(not uses_pgbroker(), reason="pgbroker's qcluster option")]


def test_run_once_runs_what_is_due_and_stops(transactional_db):
    with transaction.atomic():
        due = [async_task("tests.pgbroker.tasks.noop", n) for n in range(3)]
        later = async_task("tests.pgbroker.tasks.noop", 99)
    Job.objects.filter(pk=Job.objects.order_by("-pk").values("pk")[:1]).update(
        run_at=Now() + timedelta(hours=1))

    done = subprocess.run([sys.executable, "manage.py", "qcluster", "--run-once"], cwd=BASE_DIR,
                          env=subprocess_env(), capture_output=True, text=True, timeout=60,
                          check=False)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert set(Success.objects.filter(id__in=due).values_list("id", flat=True)) == set(due)
    assert not Success.objects.filter(id=later).exists()
    assert Job.objects.count() == 1, "the job not due yet stays queued"
