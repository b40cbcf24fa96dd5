"""django-q2's schedules on each broker's main cluster: made due before it started
(conftest.seed_schedules), they have run once each by now, with django-q2's next run.

These tests run last (`@last`): django-q2's stock cluster runs its scheduler first 30 s after
it started (pgbroker's after 1 s), and the other tests fill that time.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule, Success
from django_q.tasks import schedule

from tests.conformance.conftest import SCHEDULES, TASKS, croniter, last, runs

# conformance: its own run in make test's second pass (it mostly waits on its clusters)
pytestmark = [pytest.mark.cluster, pytest.mark.any_broker, pytest.mark.conformance]

PERIOD = {"minutes": timedelta(minutes=5), "hourly": timedelta(hours=1),
          "daily": timedelta(days=1)}


@last
def test_due_schedules_run_once_and_move_on(clusters):
    kinds = list(SCHEDULES)
    clusters.main.settle(lambda: all(runs(f"schedule-{kind}") for kind in kinds),
                         "every due schedule to run", timeout=45)
    for kind in kinds:
        assert runs(f"schedule-{kind}") == 1, kind
        pk, first = clusters.seeded[kind]
        if kind == "once":
            assert not Schedule.objects.filter(pk=pk).exists(), "a once schedule is deleted"
            continue
        s = Schedule.objects.get(pk=pk)
        assert s.task, kind
        clusters.main.settle(lambda s=s: Success.objects.filter(id=s.task).exists(),
                             f"the task of schedule {kind}")
        assert Success.objects.get(id=s.task).group == s.name, "its group is its name"
        if kind in PERIOD:
            assert s.next_run == first + PERIOD[kind], kind
        else:  # cron: the next */5 minute
            assert s.next_run > timezone.now()
            assert s.next_run.minute % 5 == 0
        assert s.repeats == -1
    assert runs("schedule-later") == 0, "a schedule not due yet does not run"
    assert Schedule.objects.get(pk=clusters.seeded["later"][0]).task is None


@pytest.mark.skipif(croniter is not None, reason="croniter is installed")
def test_cron_needs_croniter(broker):
    """croniter is not in requirements.txt: a cron schedule cannot be made, on either broker."""
    with pytest.raises(ImportError, match="croniter"):
        schedule(f"{TASKS}.run", "cron", schedule_type=Schedule.CRON, cron="*/5 * * * *")
