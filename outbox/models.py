from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

# last_error of a pending message whose store (Redis) was down: not the message's fault.
WAITING_PREFIX = "waiting for "


class MessageState(models.TextChoices):
    PENDING = "pending"  # neither published nor dead: the relay will hand it over
    PUBLISHED = "published"
    DEAD = "dead"  # given up on, kept with its error, retryable


# Each state as a condition, written once: the QuerySet, the counts, the admin filter and the
# pending index all use these.
STATE_CONDITIONS = {
    MessageState.PENDING: Q(published_at__isnull=True, dead_at__isnull=True),
    MessageState.PUBLISHED: Q(published_at__isnull=False),
    MessageState.DEAD: Q(published_at__isnull=True, dead_at__isnull=False),
}


# every publication counted by a trigger (migration 0005), in the relay's transaction
PUBLISHED_TALLY = "outbox.published"


class OutboxMessageQuerySet(models.QuerySet):
    def in_state(self, state: str) -> OutboxMessageQuerySet:
        return self.filter(STATE_CONDITIONS[MessageState(state)])

    def pending(self) -> OutboxMessageQuerySet:
        return self.in_state(MessageState.PENDING)

    def published(self) -> OutboxMessageQuerySet:
        return self.in_state(MessageState.PUBLISHED)

    def dead(self) -> OutboxMessageQuerySet:
        return self.in_state(MessageState.DEAD)

    def waiting_for_store(self) -> OutboxMessageQuerySet:
        """Pending because their store (Redis) was down when the relay tried."""
        return self.pending().filter(last_error__startswith=WAITING_PREFIX)


class OutboxMessage(models.Model):
    """A message written in the same transaction as the business change that caused it.

    The relay hands it to its topic's handler and marks it published in one transaction.
    Pending: neither published nor dead. Dead: gave up after OUTBOX_MAX_ATTEMPTS (or could
    never work: unknown topic, payload rejected), kept with its error, retryable.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    topic = models.CharField(max_length=100)
    payload = models.JSONField()
    # by the database's clock: compared on other hosts (common.db.db_now)
    created_at = models.DateTimeField(db_default=Now())
    available_at = models.DateTimeField(db_default=Now())
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    dead_at = models.DateTimeField(null=True, blank=True)

    objects = OutboxMessageQuerySet.as_manager()

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["available_at"],
                name="outbox_pending_idx",
                condition=STATE_CONDITIONS[MessageState.PENDING],
            ),
            # retention (prune, oldest first) and the "just published" grace
            models.Index(fields=["published_at"], name="outbox_published_idx",
                         condition=STATE_CONDITIONS[MessageState.PUBLISHED]),
            models.Index(fields=["id"], name="outbox_dead_idx",
                         condition=STATE_CONDITIONS[MessageState.DEAD]),
            # the admin's list (newest first) and a business row's message (written with it)
            models.Index(fields=["created_at"], name="outbox_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.topic} {self.id}"

    @property
    def state(self) -> MessageState:
        if self.published_at:
            return MessageState.PUBLISHED
        if self.dead_at:
            return MessageState.DEAD
        return MessageState.PENDING


class RelayAttempt(models.Model):
    """A relay started handling this message and has not finished: counted on a connection of
    its own before the handling, so a message that kills the relay is counted although the
    relay's transaction never commits (and, after OUTBOX_MAX_ATTEMPTS, goes dead). The batch
    that finishes deletes its rows."""

    message_id = models.UUIDField(primary_key=True)
    started = models.PositiveIntegerField(default=0)
    last_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.message_id}: {self.started}"
