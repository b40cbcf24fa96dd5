"""The cluster's scheduler never blocks the cluster, one bad schedule never stops the others,
and the project's own schedules come back when deleted (real clusters, real row locks)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from common.db import open_autocommit
from pgbroker.scheduler import declared
from tests.helpers import wait_until
from tests.pgbroker.test_liveness import RUN, enqueue

# The scheduler is the cluster's, whatever the broker: once is enough (not in the ORM pass).
pytestmark = [pytest.mark.cluster, pytest.mark.any_broker, pytest.mark.beside]
# How long the rows are held: short in `make test`; SCHEDULE_HOLD_SECONDS=60 for the long run.
HOLD_SECONDS = float(os.environ.get("SCHEDULE_HOLD_SECONDS", "2"))


def due(name: str, **fields) -> Schedule:
    return Schedule.objects.create(name=name, schedule_type=Schedule.MINUTES, minutes=1,
                                   repeats=-1, next_run=timezone.now() - timedelta(seconds=5),
                                   **fields)


def test_schedule_rows_held_by_another_transaction_never_hold_up_the_jobs(
    transactional_db, start_process, events
):
    """The issue measured a frozen cluster: django-q2's scheduler runs in the cluster's loop
    and waited for the rows with `select_for_update()`."""
    due("held", func="math.floor", args="1.5")
    holder = open_autocommit("a person editing a schedule")
    try:
        holder.execute("SET idle_in_transaction_session_timeout = 0")  # it may hold them long
        holder.execute("BEGIN")
        holder.execute("SELECT id FROM django_q_schedule FOR UPDATE")
        held = time.monotonic()
        cluster = start_process("qcluster", ready="running.")
        time.sleep(2)  # the scheduler's first pass (1 s after the start) met the held rows
        started: list[float] = []
        while not started or time.monotonic() - held < HOLD_SECONDS:
            key = f"k{len(started)}"
            enqueued = time.time()
            enqueue(events, key)
            def starts(key: str = key) -> list[tuple[int, float]]:
                return events.starts(key)

            wait_until(starts, timeout=10, interval=0.02,
                       message=lambda: "the job to start:\n" + cluster.log()[-2000:])
            started.append(events.starts(key)[0][1] - enqueued)
            time.sleep(0.5)
        assert max(started) < 1.0, started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert Schedule.objects.get(name="held").next_run < timezone.now(), "skipped, not run"


def test_a_schedule_that_cannot_be_read_does_not_stop_the_others(
    transactional_db, start_process, events
):
    due("broken", func="math.floor", args="(1.5,")  # not a Python literal
    due("fine", func=RUN, args=repr((str(events.path), "scheduled", 0.0)))
    cluster = start_process("qcluster", ready="running.")
    wait_until(lambda: events.ends("scheduled"), timeout=15,
               message=lambda: "the good schedule to run:\n" + cluster.log()[-2000:])
    cluster.wait_for_log("schedule [")
    assert "failed, the others go on" in cluster.log()
    assert Schedule.objects.get(name="fine").next_run > timezone.now()


def test_the_projects_own_schedules_are_created_again_when_deleted(
    transactional_db, start_process
):
    names = {d.name for d in declared()}
    assert {"relay outbox", "reconcile welcome emails", "recover sagas", "prune",
            "audit welcome emails", "audit sagas", "fold tallies"} <= names
    Schedule.objects.filter(name__in=names).delete()
    start_process("qcluster", ready="running.")
    wait_until(lambda: Schedule.objects.filter(name__in=names).count() == len(names),
               timeout=15, message="the schedules to be back")
    relay = Schedule.objects.get(name="relay outbox")
    assert (relay.func, relay.schedule_type, relay.minutes, relay.repeats) == (
        "outbox.tasks.relay_outbox", Schedule.MINUTES, 1, -1)
    assert relay.next_run > timezone.now() + timedelta(seconds=30), "on its cadence"
