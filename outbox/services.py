"""The transactional outbox: publish inside the business transaction, relay afterwards."""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Now

from common import validate
from common.db import db_now
from common.errors import OperationError
from common.sideconn import side_cursor
from faults import services as faults
from faults.services import fire
from jobs.queues import RedisUnavailable, Store, enqueue, redis_batch
from jobs.selectors import queued_tasks, redis_queued_tasks, redis_status
from outbox import topics
from outbox.models import WAITING_PREFIX, OutboxMessage, OutboxMessageQuerySet, RelayAttempt
from outbox.topics import PermanentError
from pgbroker.broker import batched_enqueue, configured

logger = logging.getLogger(__name__)

CHANNEL = "outbox"
NOT_IN_TRANSACTION = (
    "outbox.publish() must run inside transaction.atomic(), together with the change that "
    "causes the message; outside one it is just another dual write"
)
UNKNOWN_TOPIC = "unknown outbox topic {topic}; known topics: {known}"
BATCH: dict[str, Any] = {"what": "the batch size", "low": 1, "high": 10_000}
RELAY_IN_TRANSACTION = (
    "relay_outbox() must not run inside a transaction: it commits each batch on its own"
)
NO_TOPIC = "no topic {topic!r} is registered (known topics: {known}); message is dead"
WAITING = WAITING_PREFIX + "{store}: {error}"
STORE_RETRY_SECONDS = 1.0  # a message whose store is down is tried again this often
KILLED_RELAY = ("the relay died {n} times while handling this message (a poison message): "
                "dead, kept for a person")


class OutboxError(OperationError):
    """A request the outbox cannot honour."""


@dataclass
class RelayResult:
    published: int = 0
    failed: int = 0
    dead: int = 0
    waiting: int = 0  # their store (Redis) is down: tried again soon, no attempt counted
    isolating: bool = False  # a message of a batch that killed a relay is being tried alone

    def __iadd__(self, other: RelayResult) -> RelayResult:
        self.published += other.published
        self.failed += other.failed
        self.dead += other.dead
        self.waiting += other.waiting
        self.isolating = other.isolating
        return self

    @property
    def handled(self) -> int:
        return self.published + self.failed + self.dead + self.waiting

    def __str__(self) -> str:
        text = f"published {self.published}, failed {self.failed} (will retry), dead {self.dead}"
        return text + (f", waiting for Redis {self.waiting}" if self.waiting else "")


def publish(*, topic: str, payload: dict) -> OutboxMessage:
    """Write a message in the caller's transaction; the relay delivers it after commit.

    The payload must be a JSON object PostgreSQL stores as given (common.validate.payload: no
    NaN or Infinity, no NUL, at most 64 KB): anything else is refused and nothing is written."""
    _check(topic, payload)
    message = OutboxMessage.objects.create(topic=topic, payload=payload)
    _wake_relay()
    return message


PUBLISH_MANY = """
INSERT INTO outbox_outboxmessage (id, topic, payload, attempts, last_error)
SELECT gen_random_uuid(), topic, payload, 0, ''
  FROM unnest(%s::text[], %s::jsonb[]) AS m(topic, payload)
"""


def publish_many(messages: list[tuple[str, dict]]) -> None:
    """publish() for several (topic, payload) messages, in one statement and one wake-up;
    all or nothing (the first bad one is refused, and nothing is written)."""
    for topic, payload in messages:
        _check(topic, payload)
    if messages:
        with connection.cursor() as cur:
            cur.execute(PUBLISH_MANY, [[t for t, _ in messages],
                                       [json.dumps(p) for _, p in messages]])
        _wake_relay()


def _check(topic: str, payload: dict) -> None:
    if not connection.in_atomic_block:
        raise OutboxError(NOT_IN_TRANSACTION)
    if not isinstance(topic, str) or topics.get(topic) is None:
        raise OutboxError(UNKNOWN_TOPIC.format(topic=validate.shown(topic),
                                               known=", ".join(topics.names())))
    try:
        validate.payload(payload, what=f"the payload of {topic}")
    except validate.Invalid as e:
        raise OutboxError(str(e)) from None


def _wake_relay() -> None:
    with connection.cursor() as cur:
        # Delivered at commit, dropped on rollback: wakes `relay_outbox --follow` at once.
        cur.execute("SELECT pg_notify(%s, '')", [CHANNEL])


def backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s ... capped at 5 minutes."""
    return timedelta(seconds=min(2 ** (attempts - 1), 300))


def relay_batch(*, batch: int) -> RelayResult:
    """Claim up to `batch` due messages (SKIP LOCKED), turn each into its topic's job, commit
    once.

    Jobs for the PostgreSQL queue are written in this transaction (with pgbroker, the batch's
    jobs are one INSERT). Jobs for Redis are pushed in one round trip before the commit, so a
    message is published only once Redis has accepted its job; a relay that dies between the
    two publishes it again (at least once; the job's own ledger absorbs the copy). A message
    whose payload its topic rejects is dead at once; one whose store is down waits, no attempt
    counted; the rest of the batch goes on.
    """
    if connection.in_atomic_block:
        raise OutboxError(RELAY_IN_TRANSACTION)
    result = RelayResult()
    batching = configured()
    with transaction.atomic(), batched_enqueue() as enqueued:
        now = db_now()
        messages = list(
            OutboxMessage.objects.pending()
            .filter(available_at__lte=now)
            .order_by("available_at", "created_at")
            .select_for_update(skip_locked=True)[:batch]
        )
        if messages:
            messages, result.isolating = _isolate_suspects(messages)
            started = _count_started(messages)
            fire("relay.publish")
        published: list = []
        redis, to_redis = redis_batch(), []
        for message in messages:
            mark = enqueued.mark()
            try:
                if started[message.pk] > settings.OUTBOX_MAX_ATTEMPTS:
                    raise PermanentError(KILLED_RELAY.format(n=started[message.pk] - 1))
                with faults.scoped(str(message.pk)):
                    fire("relay.message")
                topic = topics.get(message.topic)
                if topic is None:
                    raise PermanentError(NO_TOPIC.format(topic=message.topic,
                                                         known=", ".join(topics.names())))
                kwargs = {**topic.kwargs(message.payload), **topic.options}
                if topic.store == Store.REDIS:
                    redis.add(topic.task, **kwargs)
                    to_redis.append(message)
                    continue
                if batching:
                    enqueue(store=Store.POSTGRES, func=topic.task, **kwargs)
                else:
                    with transaction.atomic():  # savepoint: a failed INSERT spoils nothing
                        enqueue(store=Store.POSTGRES, func=topic.task, **kwargs)
            except Exception as e:
                enqueued.discard_since(mark)
                _failed(message, e, now=now, result=result)
            else:
                published.append(message.pk)
        if to_redis:
            try:
                redis.push()
            except RedisUnavailable as e:
                _wait(to_redis, e, now=now, result=result)
            else:
                fire("relay.redis_accepted")
                published += [m.pk for m in to_redis]
        if published:
            result.published = OutboxMessage.objects.filter(pk__in=published).update(
                published_at=now, attempts=F("attempts") + 1)
        RelayAttempt.objects.filter(message_id__in=[m.pk for m in messages]).delete()
    return result


def _isolate_suspects(messages: list[OutboxMessage]) -> tuple[list[OutboxMessage], bool]:
    """Messages that were in a batch whose relay died are suspects: handle the first of them
    alone (the others stay pending), so one poison message cannot take its neighbours down."""
    with side_cursor() as cur:
        cur.execute("SELECT message_id FROM outbox_relayattempt WHERE message_id = ANY(%s)",
                    [[m.pk for m in messages]])
        suspects = {row[0] for row in cur.fetchall()}
    first = next((m for m in messages if m.pk in suspects), None)
    return ([first], True) if first is not None else (messages, False)


def _count_started(messages: list[OutboxMessage]) -> dict:
    """Count this handling on the side connection, committed before anything can kill us."""
    with side_cursor() as cur:
        cur.execute(
            "INSERT INTO outbox_relayattempt (message_id, started, last_at) "
            "SELECT unnest(%s::uuid[]), 1, now() ON CONFLICT (message_id) DO UPDATE "
            "SET started = outbox_relayattempt.started + 1, last_at = now() "
            "RETURNING message_id, started", [[m.pk for m in messages]])
        return dict(cur.fetchall())


def _failed(message: OutboxMessage, e: Exception, *, now, result: RelayResult) -> None:
    """The message's own failure: back off, or dead after OUTBOX_MAX_ATTEMPTS."""
    message.attempts += 1
    message.last_error = "".join(traceback.format_exception(e))[-4000:]
    if isinstance(e, PermanentError) or message.attempts >= settings.OUTBOX_MAX_ATTEMPTS:
        message.dead_at = now
        result.dead += 1
        logger.error("outbox message %s (%s) is dead: %s", message.id, message.topic, e)
    else:
        message.available_at = now + backoff(message.attempts)
        result.failed += 1
        logger.warning("outbox message %s (%s) failed, attempt %s: %s",
                       message.id, message.topic, message.attempts, e)
    message.save(update_fields=["attempts", "last_error", "dead_at", "available_at"])


def _wait(messages: list[OutboxMessage], e: Exception, *, now, result: RelayResult) -> None:
    """Their store is down: not the messages' fault. Try again soon, count no attempt."""
    OutboxMessage.objects.filter(pk__in=[m.pk for m in messages]).update(
        available_at=now + timedelta(seconds=STORE_RETRY_SECONDS),
        last_error=WAITING.format(store="Redis", error=e))
    result.waiting += len(messages)
    logger.warning("%s outbox message(s) wait for Redis: %s", len(messages), e)


def relay_outbox(*, batch: int | None = None) -> RelayResult:
    """Relay every message that is due now, batch after batch, until none is left."""
    try:
        size = validate.integer(settings.OUTBOX_BATCH_SIZE if batch is None else batch,
                                **BATCH)
    except validate.Invalid as e:
        raise OutboxError(str(e)) from None
    total = RelayResult()
    while True:
        result = relay_batch(batch=size)
        total += result
        if result.handled < size and not result.isolating:
            return total


def next_due_in() -> float | None:
    """Seconds until the next pending message is due (0 if one is due now), None if none."""
    first = (OutboxMessage.objects.pending().order_by("available_at")
             .values_list("available_at", flat=True).first())
    if first is None:
        return None
    return max(0.0, (first - db_now()).total_seconds())


def retry_dead(*, messages: OutboxMessageQuerySet) -> int:
    """Make dead messages pending again, with a fresh set of attempts."""
    with transaction.atomic():
        n = messages.dead().update(
            dead_at=None, attempts=0, available_at=Now()
        )
        if n:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_notify(%s, '')", [CHANNEL])
    return n


REPUBLISHED = "published again by reconciliation: published at {at}, its work never done"


def reconcile(*, topic: str, older_than: float) -> int:
    """Publish again the messages of `topic` published more than `older_than` seconds ago (and
    within a day) whose work never happened and whose job is not waiting in its store: a store
    lost it (a Redis crash, a Redis cluster killed with the job in hand). Needs the topic's
    `done`; skipped while the store cannot be read. Returns how many."""
    spec = topics.get(topic)
    if spec is None or spec.done is None:
        return 0
    now = db_now()
    messages = list(OutboxMessage.objects.filter(
        topic=topic, published_at__lt=now - timedelta(seconds=older_than),
        published_at__gte=now - timedelta(days=settings.RECONCILE_WINDOW_DAYS),
    ).only("id", "payload", "published_at"))
    if not messages:
        return 0
    finished = spec.done([m.payload for m in messages], older_than=older_than)
    undone = [m for m, done in zip(messages, finished, strict=True) if not done]
    if not undone:
        return 0
    if spec.store == Store.REDIS:
        if not redis_status().up:
            return 0  # cannot tell what Redis still holds
        waiting = redis_queued_tasks()
    else:
        waiting = queued_tasks(include_parked=True)
    queued = {(t.func, json.dumps(t.kwargs, sort_keys=True)) for t in waiting}
    lost = []
    for m in undone:
        try:
            job = (spec.task, json.dumps(spec.kwargs(m.payload), sort_keys=True))
        except PermanentError:
            continue
        if job not in queued:
            lost.append(m)
    with transaction.atomic():
        for m in lost:
            OutboxMessage.objects.filter(pk=m.pk).update(
                published_at=None, available_at=now,
                last_error=REPUBLISHED.format(at=m.published_at.isoformat(timespec="seconds")))
            logger.warning("outbox message %s (%s) published again: its work never happened",
                           m.id, topic)
        if lost:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_notify(%s, '')", [CHANNEL])
    return len(lost)
