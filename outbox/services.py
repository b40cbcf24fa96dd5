"""The transactional outbox: publish inside the business transaction, relay afterwards."""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from faults.services import fire
from outbox.handlers import HANDLERS, PermanentError
from outbox.models import OutboxMessage
from pgbroker.broker import batched_enqueue, configured

logger = logging.getLogger(__name__)

CHANNEL = "outbox"
NOT_IN_TRANSACTION = (
    "outbox.publish() must run inside transaction.atomic(), together with the change that "
    "causes the message; outside one it is just another dual write"
)
UNKNOWN_TOPIC = "unknown outbox topic {topic!r}; known topics: {known}"
NOT_JSON = "outbox payload for {topic!r} is not JSON-serialisable: {error}"
RELAY_IN_TRANSACTION = (
    "relay_outbox() must not run inside a transaction: it commits each batch on its own"
)
NO_HANDLER = "no handler for topic {topic!r} (known topics: {known}); message is dead"


class OutboxError(Exception):
    """A request the outbox cannot honour."""


@dataclass
class RelayResult:
    published: int = 0
    failed: int = 0
    dead: int = 0

    def __iadd__(self, other: RelayResult) -> RelayResult:
        self.published += other.published
        self.failed += other.failed
        self.dead += other.dead
        return self

    @property
    def handled(self) -> int:
        return self.published + self.failed + self.dead


def publish(*, topic: str, payload: dict) -> OutboxMessage:
    """Write a message in the caller's transaction; the relay delivers it after commit."""
    if not connection.in_atomic_block:
        raise OutboxError(NOT_IN_TRANSACTION)
    if topic not in HANDLERS:
        raise OutboxError(UNKNOWN_TOPIC.format(topic=topic, known=", ".join(sorted(HANDLERS))))
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as e:
        raise OutboxError(NOT_JSON.format(topic=topic, error=e)) from e
    message = OutboxMessage.objects.create(topic=topic, payload=payload)
    with connection.cursor() as cur:
        # Delivered at commit, dropped on rollback: wakes `relay_outbox --follow` at once.
        cur.execute("SELECT pg_notify(%s, '')", [CHANNEL])
    return message


def pending() -> QuerySet[OutboxMessage]:
    return OutboxMessage.objects.filter(published_at__isnull=True, dead_at__isnull=True)


def backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s ... capped at 5 minutes."""
    return timedelta(seconds=min(2 ** (attempts - 1), 300))


def relay_batch(*, batch: int) -> RelayResult:
    """Claim up to `batch` due messages (SKIP LOCKED), handle each, commit once.

    A failing handler rolls back only its own work (a savepoint, or for a handler that only
    enqueues, its jobs dropped from the batch); its message is rescheduled with backoff (or
    dead), and the rest of the batch goes on. With pgbroker the batch's jobs are one INSERT,
    and the published messages one UPDATE.
    """
    if connection.in_atomic_block:
        raise OutboxError(RELAY_IN_TRANSACTION)
    result = RelayResult()
    max_attempts = settings.OUTBOX_MAX_ATTEMPTS
    batching = configured()
    with transaction.atomic(), batched_enqueue() as enqueued:
        now = timezone.now()
        messages = list(
            pending()
            .filter(available_at__lte=now)
            .order_by("available_at", "created_at")
            .select_for_update(skip_locked=True)[:batch]
        )
        if messages:
            fire("relay.publish")
        published: list = []
        for message in messages:
            handler = HANDLERS.get(message.topic)
            message.attempts += 1
            mark = enqueued.mark()
            try:
                if handler is None:
                    raise PermanentError(
                        NO_HANDLER.format(topic=message.topic, known=", ".join(sorted(HANDLERS)))
                    )
                if batching and getattr(handler, "enqueue_only", False):
                    handler(message.payload)
                else:
                    with transaction.atomic():  # savepoint
                        handler(message.payload)
            except Exception as e:
                enqueued.discard_since(mark)
                message.last_error = "".join(traceback.format_exception(e))[-4000:]
                if isinstance(e, PermanentError) or message.attempts >= max_attempts:
                    message.dead_at = now
                    result.dead += 1
                    logger.error("outbox message %s (%s) is dead: %s", message.id, message.topic, e)
                else:
                    message.available_at = now + backoff(message.attempts)
                    result.failed += 1
                    logger.warning("outbox message %s (%s) failed, attempt %s: %s",
                                   message.id, message.topic, message.attempts, e)
                message.save(update_fields=["attempts", "last_error", "dead_at", "available_at"])
            else:
                published.append(message.pk)
        if published:
            result.published = OutboxMessage.objects.filter(pk__in=published).update(
                published_at=now, attempts=F("attempts") + 1)
    return result


def relay_outbox(*, batch: int | None = None) -> RelayResult:
    """Relay every message that is due now, batch after batch, until none is left."""
    size = batch or settings.OUTBOX_BATCH_SIZE
    total = RelayResult()
    while True:
        result = relay_batch(batch=size)
        total += result
        if result.handled < size:
            return total


def next_due_in() -> float | None:
    """Seconds until the next pending message is due (0 if one is due now), None if none."""
    first = pending().order_by("available_at").values_list("available_at", flat=True).first()
    if first is None:
        return None
    return max(0.0, (first - timezone.now()).total_seconds())


def retry_dead(*, messages: QuerySet[OutboxMessage]) -> int:
    """Make dead messages pending again, with a fresh set of attempts."""
    with transaction.atomic():
        n = messages.filter(dead_at__isnull=False, published_at__isnull=True).update(
            dead_at=None, attempts=0, available_at=timezone.now()
        )
        if n:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_notify(%s, '')", [CHANNEL])
    return n
