"""PostgreSQL and Redis failing under real processes: both clusters, the relay, SIGKILLs and a
Redis restart in the middle of a burst."""


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

    def stuck() -> str:
        from jobs.queues import redis_queue
        queue = redis_queue()
        return (f"every signup to commit and every email to be sent (users "
                f"{User.objects.count()}, emails {EmailSend.objects.count()}, queue drained "
                f"{queue_drained()}, outbox pending {OutboxMessage.objects.pending().count()}, "
                f"redis queued {queue.connection.llen(queue.list_key)}, in flight "
                f"{len(queue.in_flight())}):\n" + redis_cluster.log()[-3000:])

    wait_until(settled, timeout=120, interval=0.5, message=stuck)
    for mode in (Mode.OUTBOX, Mode.QUE):
        counts = emails_per_user(mode)
        assert len(counts) == n
        assert [u for u, c in counts.items() if c != 1] == [], f"{mode}: lost or duplicated"
    call_command("reconcile", "--older-than", "0")
    assert "published again: 0; que email jobs enqueued again: 0" in capsys.readouterr().out


@pytest.mark.beside_conformance  # mostly waits: make test's second pass
def test_jobs_redis_itself_loses_are_called_lost_by_redis_and_reconciled(
    qcluster, start_process, capsys
):
    """What reliable fetch cannot cover: Redis itself losing its data (a restart without
    persistence). PostgreSQL still says "published"; the dashboard calls these lost by Redis,
    not by dual-write, and reconciliation publishes them again (a cluster killed with jobs in
    hand loses nothing: tests/jobs/test_reliable_fetch.py)."""
    users = [User.objects.create_user(username=f"o{i}", signup_mode=Mode.OUTBOX)
             for i in range(3)]
    from django.db import transaction

    from outbox.services import publish, relay_outbox

    with transaction.atomic():
        for user in users:
            publish(topic=services.WELCOME_TOPIC, payload={"user_id": user.pk})
    assert relay_outbox().published == 3
    assert stores.act(action=stores.Action.LOSE_JOBS) == "Redis lost its 3 queued job(s)"
    assert redis_queued_tasks() == [], "Redis no longer has them"
    assert not OutboxMessage.objects.pending().exists(), "and the outbox says they were published"

    from dashboard.selectors import consistency_checks
    from users.selectors import PUBLISHED_GRACE_SECONDS

    def flagged() -> bool:
        checks = {c.name: c for c in consistency_checks()}
        return checks["outbox_lost_by_store"].count == 3
    wait_until(flagged, timeout=PUBLISHED_GRACE_SECONDS + 10, interval=0.5,
               message="the dashboard to call them lost by Redis")
    checks = {c.name: c for c in consistency_checks()}
    assert checks["dual_write_lost_email"].count == 0, "not the talk's anomaly"
    assert checks["reliable_signups_lost_email"].count == 0, "reconciliation will send them"

    call_command("reconcile", "--older-than", "0")
    assert "outbox messages published again: 3" in capsys.readouterr().out
    assert relay_outbox().published == 3
    start_process("qcluster", name="qcluster-redis-2", ready="running.", Q_CLUSTER_NAME="redis")
    wait_until(lambda: EmailSend.objects.count() == 3, timeout=30,
               message="the republished jobs to run")
    assert emails_per_user(Mode.OUTBOX) == {u.username: 1 for u in users}
