import json
import re
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

from faults import services as faults
from faults import stores
from faults.models import Fault
from jobs.queues import Store
from jobs.selectors import queued_tasks, redis_queued_tasks
from outbox import services, topics
from outbox.models import OutboxMessage
from tests.helpers import wait_until

TOPIC = "user.welcome_email"  # registered by the users app: relayed into Redis


def redis_user_ids() -> list[int]:
    return sorted(q.kwargs["user_id"] for q in redis_queued_tasks())


@pytest.fixture
def pg_topic() -> Iterator[str]:
    """A throwaway topic whose jobs go to the PostgreSQL queue (registered by no app)."""
    topic = topics.register(topics.Topic(name="test.pg", task="tests.pgbroker.tasks.noop",
                                         store=Store.POSTGRES, kwargs=lambda p: {"n": p["n"]}))
    yield topic.name
    topics.unregister(topic.name)


def publish_committed(n: int, payload=None) -> list[OutboxMessage]:
    with transaction.atomic():
        return [services.publish(topic=TOPIC, payload=payload or {"user_id": i + 1})
                for i in range(n)]


# transactional_db: the claim is about autocommit, which the db fixture's transaction hides.
def test_publish_refuses_to_run_outside_a_transaction(transactional_db):
    with pytest.raises(services.OutboxError, match="must run inside transaction.atomic"):
        services.publish(topic=TOPIC, payload={"user_id": 1})
    assert not OutboxMessage.objects.exists()


def test_a_rolled_back_transaction_takes_its_message_with_it(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.publish(topic=TOPIC, payload={"user_id": 1})
        raise RuntimeError("rollback")
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize(
    ("topic", "payload", "message"),
    [
        ("no.such.topic", {}, "unknown outbox topic 'no.such.topic'"),
        (TOPIC, {"when": timezone.now()}, "the payload of user.welcome_email is not JSON: "
                                          "Object of type datetime is not JSON serializable"),
        # found in issue 12: each of these was written (NaN/Infinity as invalid JSON), or was a
        # DataError from PostgreSQL (NUL, a lone surrogate), or a payload of any size
        (TOPIC, {"x": float("nan")}, "holds NaN or Infinity, which JSON has no way to write"),
        (TOPIC, {"x": [1, float("inf")]}, "holds NaN or Infinity"),
        (TOPIC, [1, 2], "the payload of user.welcome_email must be a JSON object, not list"),
        (TOPIC, "user 1", "must be a JSON object, not str"),
        (TOPIC, None, "must be a JSON object, not NoneType"),
        (TOPIC, {"x": "a" * 70_000}, "is 70,009 bytes as JSON; at most 65,536"),
        (TOPIC, {"x": "nul\x00"}, "contains a NUL character (PostgreSQL cannot store it)"),
        (TOPIC, {"x\x00": 1}, "contains a NUL character"),
        (TOPIC, {"x": "\ud800"}, "contains a lone surrogate"),
        (TOPIC, {1: "one"}, "has a key that is not text: 1"),
        (TOPIC, {"x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
         "nested more than 32 levels deep"),
    ],
)
def test_publish_refuses_bad_input_and_writes_nothing(db, topic, payload, message):
    with pytest.raises(services.OutboxError, match=re.escape(message)), transaction.atomic():
        services.publish(topic=topic, payload=payload)
    assert not OutboxMessage.objects.exists()


def test_relay_batch_sizes_are_bounded(db):
    with pytest.raises(services.OutboxError, match="the batch size must be a whole number from 1 "
                                                   "to 10,000, not 0"):
        services.relay_outbox(batch=0)
    with pytest.raises(CommandError, match="argument --batch: the batch size must be a whole "
                                           "number from 1 to 10,000, not '1e9'"):
        call_command("relay_outbox", "--batch", "1e9")


def test_relay_refuses_to_run_inside_a_transaction(db):
    with pytest.raises(services.OutboxError, match="must not run inside a transaction"):
        services.relay_outbox()


# transactional_db below: the relay commits batch by batch, in autocommit, as in production.


def test_relay_publishes_each_due_message_and_enqueues_its_job_on_redis(transactional_db):
    publish_committed(3)
    result = services.relay_outbox(batch=2)
    assert (result.published, result.failed, result.dead) == (3, 0, 0)
    assert OutboxMessage.objects.filter(published_at__isnull=False).count() == 3
    assert redis_user_ids() == [1, 2, 3]
    assert queued_tasks() == [], "the welcome topic's store is Redis, not PostgreSQL"
    assert services.relay_outbox().handled == 0


def test_a_topic_on_the_postgresql_queue_enqueues_there(transactional_db, pg_topic):
    with transaction.atomic():
        services.publish(topic=pg_topic, payload={"n": 7})
    assert services.relay_outbox().published == 1
    assert [(q.func, q.kwargs) for q in queued_tasks()] == [("tests.pgbroker.tasks.noop",
                                                             {"n": 7})]
    assert redis_queued_tasks() == []


def test_with_redis_refusing_writes_messages_wait_uncounted_then_go(transactional_db):
    publish_committed(2)
    stores.act(action=stores.Action.REFUSE_WRITES)
    for _ in range(2):
        result = services.relay_outbox()
        assert (result.waiting, result.published, result.failed) == (2, 0, 0)
        assert set(OutboxMessage.objects.values_list("attempts", flat=True)) == {0}
        msg = OutboxMessage.objects.first()
        assert msg is not None
        assert msg.state == "pending"
        assert "waiting for Redis: Redis refused the job (ReadOnlyError" in msg.last_error \
            or "NOREPLICAS" in msg.last_error, msg.last_error
        OutboxMessage.objects.update(available_at=timezone.now())
    stores.act(action=stores.Action.ACCEPT_WRITES)
    assert services.relay_outbox().published == 2
    assert redis_user_ids() == [1, 2]


def test_with_redis_stopped_messages_wait_then_go_when_it_is_back(transactional_db):
    publish_committed(1)
    stores.act(action=stores.Action.STOP)
    assert services.relay_outbox().waiting == 1
    assert "ConnectionError" in OutboxMessage.objects.get().last_error
    stores.act(action=stores.Action.START)
    OutboxMessage.objects.update(available_at=timezone.now())
    assert services.relay_outbox().published == 1
    assert redis_user_ids() == [1]


def test_an_unknown_topic_goes_dead_with_a_clear_error(transactional_db):
    OutboxMessage.objects.create(topic="billing.invoice", payload={"id": 1})
    result = services.relay_outbox()
    assert result.dead == 1
    msg = OutboxMessage.objects.get()
    assert msg.state == "dead"
    assert "no topic 'billing.invoice' is registered" in msg.last_error
    assert queued_tasks() == []
    assert redis_queued_tasks() == []


def test_a_payload_the_handler_rejects_goes_dead_at_once_and_the_batch_goes_on(transactional_db):
    publish_committed(1, payload={"user_id": "not-a-number"})
    publish_committed(1, payload={"user_id": 7})
    result = services.relay_outbox()
    assert (result.published, result.dead) == (1, 1)
    dead = OutboxMessage.objects.get(dead_at__isnull=False)
    assert "payload needs a positive integer user_id" in dead.last_error
    assert redis_user_ids() == [7]


def test_a_failing_topic_backs_off_then_goes_dead_after_max_attempts(
    transactional_db, settings
):
    settings.OUTBOX_MAX_ATTEMPTS = 3
    broken = {"yes": True}

    def kwargs(payload):
        if broken["yes"]:
            raise ConnectionError("the address service is unreachable")
        return {"n": payload["n"]}

    topics.register(topics.Topic(name="test.flaky", task="tests.pgbroker.tasks.noop",
                                 store=Store.POSTGRES, kwargs=kwargs))
    try:
        with transaction.atomic():
            msg = services.publish(topic="test.flaky", payload={"n": 1})
        for attempt in (1, 2):
            result = services.relay_outbox()
            assert result.failed == 1
            msg.refresh_from_db()
            assert msg.attempts == attempt
            assert msg.available_at > timezone.now()  # backed off: not due again yet
            assert services.relay_outbox().handled == 0
            OutboxMessage.objects.filter(pk=msg.pk).update(available_at=timezone.now())
        assert services.relay_outbox().dead == 1
        msg.refresh_from_db()
        assert msg.state == "dead"
        assert "ConnectionError: the address service is unreachable" in msg.last_error

        broken["yes"] = False  # the service is back
        assert services.retry_dead(messages=OutboxMessage.objects.all()) == 1
        assert services.relay_outbox().published == 1
        assert len(queued_tasks()) == 1
    finally:
        topics.unregister("test.flaky")


def test_a_fault_in_the_relay_loses_nothing(transactional_db):
    publish_committed(2)
    faults.arm(point="relay.publish", action="raise", times=1)
    with pytest.raises(faults.InjectedFault):
        services.relay_outbox()
    assert OutboxMessage.objects.pending().count() == 2  # the claimed batch rolled back, untouched
    assert services.relay_outbox().published == 2


def test_relay_once_command_prints_the_counts(transactional_db, capsys):
    publish_committed(2)
    call_command("relay_outbox", "--once")
    assert "published 2, failed 0 (will retry), dead 0" in capsys.readouterr().out


@pytest.mark.beside_lab  # mostly waits: make test's second pass
def test_two_relays_at_once_publish_each_message_exactly_once(transactional_db, start_process):
    publish_committed(300)
    # The first relay claims a batch and holds it (and its row locks) for 4 s; the second
    # starts while it does and must work around it with SKIP LOCKED: both really run at once.
    faults.arm(point="relay.publish", action="delay", times=1, delay_ms=4_000)
    relays = [start_process("relay_outbox", "--once", "--json", "--batch", "7", name="relay0")]
    wait_until(lambda: Fault.objects.filter(point="relay.publish", fired=1).exists(),
               timeout=30, message="the first relay to claim its batch")
    relays.append(start_process("relay_outbox", "--once", "--json", "--batch", "7",
                                name="relay1"))
    for relay in relays:
        assert relay.proc.wait(timeout=60) == 0, relay.log()
    assert OutboxMessage.objects.filter(published_at__isnull=False).count() == 300
    assert redis_user_ids() == list(range(1, 301)), "each message enqueued its job once"
    counts = [json.loads(r.log().strip().splitlines()[-1])["published"] for r in relays]
    assert sum(counts) == 300
    assert counts[0] >= 7, "the first relay published the batch it held"
    assert counts[1] > 0, "the second relay worked around the held batch"


def test_a_crashed_relay_loses_nothing_and_the_next_one_delivers(transactional_db, start_process):
    publish_committed(5)
    faults.arm(point="relay.publish", action="crash", times=1)
    crashed = start_process("relay_outbox", "--once", name="crashing-relay")
    assert crashed.proc.wait(timeout=60) == faults.CRASH_EXIT_CODE
    assert OutboxMessage.objects.pending().count() == 5
    again = start_process("relay_outbox", "--once", name="relay")
    assert again.proc.wait(timeout=60) == 0
    assert OutboxMessage.objects.pending().count() == 0
    assert redis_user_ids() == [1, 2, 3, 4, 5]


def test_a_relay_killed_after_redis_accepted_publishes_again_and_one_email_goes(
    transactional_db, start_process
):
    """The one window of the outbox-to-Redis path: Redis has the jobs, PostgreSQL has not yet
    committed "published". The relay dies right there; the next relay pushes them again, and
    the email ledger sends each user's email once."""
    from django_q.models import Task

    from users.models import EmailSend, User

    users = [User.objects.create_user(username=f"u{i}", signup_mode="outbox") for i in range(3)]
    with transaction.atomic():
        for user in users:
            services.publish(topic=TOPIC, payload={"user_id": user.pk})
    faults.arm(point="relay.redis_accepted", action="crash", times=1)
    crashed = start_process("relay_outbox", "--once", name="crashing-relay")
    assert crashed.proc.wait(timeout=60) == faults.CRASH_EXIT_CODE
    assert OutboxMessage.objects.pending().count() == 3, (
        "PostgreSQL never committed them as published")
    assert redis_user_ids() == sorted(u.pk for u in users), "but Redis had accepted them"
    again = start_process("relay_outbox", "--once", name="relay")
    assert again.proc.wait(timeout=60) == 0
    assert OutboxMessage.objects.pending().count() == 0
    assert redis_user_ids() == sorted([u.pk for u in users] * 2)
    start_process("qcluster", name="qcluster-redis", ready="running.", Q_CLUSTER_NAME="redis")
    wait_until(lambda: Task.objects.filter(func="users.tasks.send_welcome_email").count() == 6,
               timeout=30, message="the Redis cluster to run all six jobs (their results)")
    assert sorted(EmailSend.objects.values_list("user_id", flat=True)) == sorted(
        u.pk for u in users), "one email each: the copies found their ledger row"


def test_follow_wakes_on_notify_and_stops_cleanly_on_sigterm(transactional_db, start_process):
    # OUTBOX_POLL_SECONDS=60: only NOTIFY can make it relay in time
    relay = start_process("relay_outbox", "--follow", ready="relaying outbox messages",
                          OUTBOX_POLL_SECONDS="60")
    publish_committed(1)
    wait_until(lambda: not OutboxMessage.objects.pending().exists(), timeout=15,
               message="the NOTIFY to wake the relay")
    assert relay.stop(grace=10) == "terminated"
    assert relay.proc.returncode == 0
    assert "relay stopped" in relay.log()


def test_follow_survives_losing_its_database_connections(transactional_db, start_process):
    relay = start_process("relay_outbox", "--follow", ready="relaying outbox messages",
                          OUTBOX_POLL_SECONDS="1")
    from django.db import connection

    with connection.cursor() as cur:  # every session but ours and the side connection
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND application_name <> 'side'")
        assert cur.fetchone()[0] >= 1
    publish_committed(1)
    wait_until(lambda: not OutboxMessage.objects.pending().exists(), timeout=20,
               message="the relay to reconnect and deliver:\n" + relay.log())
    assert relay.proc.poll() is None
    assert relay.stop(grace=10) == "terminated"


def test_a_message_that_kills_the_relay_every_time_goes_dead_and_its_batch_goes_on(
    transactional_db, start_process
):
    """Found reading the code: attempts were counted inside the relay's transaction, so a
    message that killed the relay was never counted and killed every relay after it, forever.
    Now each handling is counted first on a connection of its own; a batch whose relay died is
    retried one message at a time, and the poison one goes dead after OUTBOX_MAX_ATTEMPTS."""
    messages = publish_committed(5)
    poison = messages[2]
    faults.arm(point="relay.message", action="crash", times=None, scope=str(poison.pk))
    codes = []
    for run in range(8):
        relay = start_process("relay_outbox", "--once", name=f"relay{run}",
                              OUTBOX_MAX_ATTEMPTS="3")
        codes.append(relay.proc.wait(timeout=60))
        if codes[-1] == 0:
            break
    assert codes == [faults.CRASH_EXIT_CODE] * 3 + [0]
    poison.refresh_from_db()
    assert poison.state == "dead"
    assert "the relay died 3 times while handling this message" in poison.last_error
    others = OutboxMessage.objects.exclude(pk=poison.pk)
    assert [m.state for m in others] == ["published"] * 4
    assert redis_user_ids() == sorted(m.payload["user_id"] for m in others)


def test_with_no_relay_running_the_postgresql_cluster_relays_once_a_minute(db):
    """Found reading the code: a dead relay stayed dead and nothing else relayed."""
    from django_q.models import Schedule

    backstop = Schedule.objects.get(name="relay outbox")
    assert (backstop.func, backstop.schedule_type, backstop.minutes, backstop.repeats) == (
        "outbox.tasks.relay_outbox", Schedule.MINUTES, 1, -1)


def test_the_backstop_task_relays_what_is_due(transactional_db):
    from outbox.tasks import relay_outbox

    publish_committed(2)
    assert relay_outbox() == "published 2, failed 0 (will retry), dead 0"
