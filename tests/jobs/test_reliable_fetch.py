"""The Redis cluster loses nothing it has taken (pgbroker.reliable_redis): a worker, or the
whole cluster, SIGKILLed with jobs in hand, and every job runs again within 2 s, with no
reconciliation, each welcome email sent once. Real `qcluster` processes, a real Redis."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.core.management import call_command
from django.db import transaction
from django.db.models import Count
from django_q.models import Failure

from devtools.processes import children
from faults import services as faults
from faults.models import Fault
from jobs.queues import redis_queue
from jobs.selectors import redis_queued_tasks, redis_status
from outbox.services import publish, relay_outbox
from pgbroker.reliable_redis import ALIVE_MS, SWEEP
from tests.helpers import wait_until
from users.models import EmailSend, Mode, User
from users.welcome import WELCOME_TOPIC

pytestmark = [pytest.mark.cluster, pytest.mark.any_broker, pytest.mark.beside_conformance,
              pytest.mark.django_db(transaction=True)]

AGAIN_WITHIN = 2.0  # seconds: the promise (docs/redis.md)


def relayed_signups(n: int, *, first: int = 0) -> list[User]:
    """n outbox signups whose welcome-email jobs are in Redis, waiting."""
    users = [User.objects.create_user(username=f"r{i}", signup_mode=Mode.OUTBOX)
             for i in range(first, first + n)]
    with transaction.atomic():
        for user in users:
            publish(topic=WELCOME_TOPIC, payload={"user_id": user.pk})
    assert relay_outbox().published == n
    return users


def sent_once(users: list[User]) -> None:
    counts = dict(User.objects.filter(pk__in=[u.pk for u in users])
                  .annotate(n=Count("email_sends")).values_list("username", "n"))
    assert counts == {u.username: 1 for u in users}, "lost or sent twice"


def nothing_left_in_redis() -> None:
    queue = redis_queue()
    assert queue.connection.llen(queue.list_key) == 0
    assert queue.in_flight() == []
    assert queue.parked() == []


def reconciled_nothing(capsys) -> None:
    capsys.readouterr()
    call_command("reconcile", "--older-than", "0")
    assert "outbox messages published again: 0" in capsys.readouterr().out


def sent_again_within_2_s(users: list[User], *, killed: float, cluster, capsys) -> None:
    """After the SIGKILL at `killed` (monotonic): every email sent within AGAIN_WITHIN, once
    each, Redis left empty, and nothing for reconciliation to do."""
    wait_until(lambda: EmailSend.objects.count() == len(users), timeout=30,
               message=lambda: "every email to be sent:\n" + cluster.log()[-3000:])
    again = time.monotonic() - killed
    with capsys.disabled():  # the figure, for `pytest -s`
        print(f"\n  ran again {again:.2f} s after the SIGKILL")
    assert again < AGAIN_WITHIN, f"the jobs ran again after {again:.2f} s"
    sent_once(users)
    wait_until(lambda: redis_queue().in_flight() == [], timeout=10,
               message="the finished jobs to leave the in-flight list")
    nothing_left_in_redis()
    reconciled_nothing(capsys)


def cluster_holding_a_running_job(start_process, name: str):
    """A one-worker Redis cluster given 5 relayed signups, whose first email job sleeps a
    minute in its worker (the running job; the others in hand behind it)."""
    users = relayed_signups(5)
    faults.arm(point="email.send", action="delay", times=1, delay_ms=60_000)
    cluster = start_process("qcluster", name=name, ready="running.", Q_CLUSTER_NAME="redis",
                            Q_WORKERS="1")
    wait_until(lambda: Fault.objects.filter(point="email.send", fired__gte=1).exists(),
               timeout=30, message="the first job to reach its delay")
    return users, cluster


def test_a_redis_worker_sigkilled_mid_job_its_jobs_run_again_within_2_s(start_process, capsys):
    users, cluster = cluster_holding_a_running_job(start_process, "qcluster-redis")
    assert not EmailSend.objects.exists()
    [dispatcher] = cluster.children()
    [worker] = children(dispatcher)

    os.kill(worker, signal.SIGKILL)  # the running job, and the ones in its pipe
    sent_again_within_2_s(users, killed=time.monotonic(), cluster=cluster, capsys=capsys)


def test_a_whole_redis_cluster_sigkilled_its_jobs_run_again_elsewhere_within_2_s(
        start_process, capsys):
    users, doomed = cluster_holding_a_running_job(start_process, "qcluster-redis-1")
    queue = redis_queue()
    wait_until(lambda: len(queue.in_flight()) == 5 and not queue.connection.llen(queue.list_key),
               timeout=10, message="the doomed cluster to hold every job")
    other = start_process("qcluster", name="qcluster-redis-2", ready="running.",
                          Q_CLUSTER_NAME="redis")

    os.killpg(doomed.pid, signal.SIGKILL)  # main process, dispatcher and worker at once
    killed = time.monotonic()
    doomed.proc.wait(timeout=10)
    # the dead cluster's key lives ALIVE_MS more; the other looks every SWEEP
    assert ALIVE_MS / 1000 + SWEEP < AGAIN_WITHIN
    sent_again_within_2_s(users, killed=killed, cluster=other, capsys=capsys)
    assert "in-flight job(s) of dead cluster" in other.log()


def test_a_job_that_kills_its_worker_every_time_is_parked_and_the_others_run(start_process):
    users = relayed_signups(1)
    faults.arm(point="email.send", action="crash", times=None)
    cluster = start_process("qcluster", name="qcluster-redis", ready="running.",
                            Q_CLUSTER_NAME="redis", Q_WORKERS="1", Q_MAX_ATTEMPTS="3")
    queue = redis_queue()
    wait_until(lambda: queue.parked(), timeout=60,
               message=lambda: "the poison job to be parked:\n" + cluster.log()[-3000:])
    faults.disarm_all()

    [parked] = queue.parked()
    assert "3 worker(s) died running it" in parked["why"]
    assert redis_status().parked == 1  # the dashboard's Redis panel shows it
    assert not EmailSend.objects.exists()
    assert redis_queued_tasks() == [], "not run again"
    [failure] = Failure.objects.all()  # the admin's failed tasks say why
    assert "3 worker(s) died running it" in failure.result
    [later] = relayed_signups(1, first=1)
    wait_until(lambda: EmailSend.objects.filter(user=later).exists(), timeout=30,
               message="a healthy job after it to run")
    assert users[0].email_sends.count() == 0
