"""PostgreSQL and Redis failing under real processes: both clusters, the relay, SIGKILLs and a
Redis restart in the middle of a burst."""

import os
import signal

import pytest
from django.core.management import call_command
from django.db.models import Count

from faults import stores
from jobs.selectors import queue_drained, redis_queued_tasks
from outbox.models import OutboxMessage
from outbox.selectors import outbox_counts
from tests.helpers import wait_until
from users import services
from users.models import EmailSend, Mode, User

pytestmark = [pytest.mark.cluster, pytest.mark.any_broker]


def emails_per_user(mode: str) -> dict[str, int]:
    return dict(User.objects.filter(signup_mode=mode).annotate(n=Count("email_sends"))
                .values_list("username", "n"))


@pytest.mark.beside  # mostly waits: make test's second pass
def test_a_redis_restart_during_a_burst_loses_and_duplicates_nothing_for_outbox_and_que(
    qcluster, redis_cluster, start_process, capsys
):
    start_process("relay_outbox", "--follow", name="relay", ready="relaying outbox messages")
    n = 500

    def signups(numbers: range) -> None:
        for i in numbers:
            for mode in (Mode.OUTBOX, Mode.QUE):
                services.enqueue_signup(name=f"{mode}-{i}", mode=mode)

    signups(range(n // 3))
    stores.act(action=stores.Action.STOP)
    signups(range(n // 3, 2 * n // 3))
    wait_until(lambda: outbox_counts().waiting, timeout=30,
               message="the relay to find Redis down and keep messages waiting")
    stores.act(action=stores.Action.START)
    signups(range(2 * n // 3, n))

    def settled() -> bool:
        return (User.objects.count() == 2 * n and queue_drained()
                and not OutboxMessage.objects.pending().exists()
                and not redis_queued_tasks() and EmailSend.objects.count() == 2 * n)

    wait_until(settled, timeout=120, interval=0.5,
               message="every signup to commit and every email to be sent:\n"
               + redis_cluster.log()[-2000:])
    for mode in (Mode.OUTBOX, Mode.QUE):
        counts = emails_per_user(mode)
        assert len(counts) == n
        assert [u for u, c in counts.items() if c != 1] == [], f"{mode}: lost or duplicated"
    call_command("reconcile", "--older-than", "0")
    assert "published again: 0; que email jobs enqueued again: 0" in capsys.readouterr().out


@pytest.mark.beside_conformance  # mostly waits: make test's second pass
def test_a_redis_cluster_killed_with_jobs_in_hand_loses_them_until_reconciled(
    qcluster, start_process, capsys
):
    """The honest gap of the outbox-to-Redis path: django-q2's Redis broker pops a job (BLPOP)
    and nothing remembers it was taken. SIGKILL the Redis cluster while it holds jobs and they
    are gone from Redis; PostgreSQL still says "published". Reconciliation closes the gap."""
    from faults import services as faults
    from faults.models import Fault

    users = [User.objects.create_user(username=f"o{i}", signup_mode=Mode.OUTBOX)
             for i in range(3)]
    from django.db import transaction

    from outbox.services import publish, relay_outbox

    with transaction.atomic():
        for user in users:
            publish(topic=services.WELCOME_TOPIC, payload={"user_id": user.pk})
    assert relay_outbox().published == 3
    faults.arm(point="email.send", action="delay", times=None, delay_ms=60_000)
    doomed = start_process("qcluster", name="qcluster-redis", ready="running.",
                           Q_CLUSTER_NAME="redis", Q_WORKERS="1")
    wait_until(lambda: not redis_queued_tasks(), timeout=30,
               message="the Redis cluster to take every job off the list")
    wait_until(lambda: Fault.objects.filter(point="email.send", fired__gte=1).exists(),
               timeout=30, message="the first job to reach its delay")
    os.killpg(doomed.pid, signal.SIGKILL)  # the whole cluster, jobs in hand
    doomed.proc.wait(timeout=10)
    faults.disarm_all()
    assert not EmailSend.objects.exists()
    assert redis_queued_tasks() == [], "Redis no longer has them"
    assert not OutboxMessage.objects.pending().exists(), "and the outbox says they were published"

    from dashboard.selectors import consistency_checks
    from users.selectors import PUBLISHED_GRACE_SECONDS

    def flagged() -> bool:
        checks = {c.name: c for c in consistency_checks()}
        return checks["outbox_lost_by_store"].count == 3
    wait_until(flagged, timeout=PUBLISHED_GRACE_SECONDS + 10, interval=0.5,
               message="the dashboard to call them lost by Redis")

    call_command("reconcile", "--older-than", "0")
    assert "outbox messages published again: 3" in capsys.readouterr().out
    assert relay_outbox().published == 3
    start_process("qcluster", name="qcluster-redis-2", ready="running.", Q_CLUSTER_NAME="redis")
    wait_until(lambda: EmailSend.objects.count() == 3, timeout=30,
               message="the republished jobs to run")
    assert emails_per_user(Mode.OUTBOX) == {u.username: 1 for u in users}
