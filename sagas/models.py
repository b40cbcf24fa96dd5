from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class State(models.TextChoices):
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    STUCK = "stuck"  # a compensation keeps failing: a person has to look


class Style(models.TextChoices):
    """Who drives a saga (the talk's two ways): a coordinator telling each service what to do,
    or each service reacting to the event of the one before it."""

    ORCHESTRATED = "orchestrated", "orchestrated (a coordinator tells each service)"
    CHOREOGRAPHED = "choreographed", "choreographed (each service reacts to events)"


FINAL_STATES = (State.COMPLETED, State.COMPENSATED)
ACTIVE_STATES = (State.RUNNING, State.COMPENSATING)


class Event(models.TextChoices):
    SAGA_START = "SAGA_START"
    STEP_START = "STEP_START"
    STEP_END = "STEP_END"
    STEP_FAIL = "STEP_FAIL"
    SAGA_ABORT = "SAGA_ABORT"
    COMP_START = "COMP_START"
    COMP_END = "COMP_END"
    COMP_FAIL = "COMP_FAIL"
    SAGA_END = "SAGA_END"


class SagaQuerySet(models.QuerySet):
    def active(self) -> SagaQuerySet:
        return self.filter(state__in=ACTIVE_STATES)

    def finished(self) -> SagaQuerySet:
        return self.filter(state__in=FINAL_STATES)

    def due(self, *, at=None) -> SagaQuerySet:
        """Active sagas whose lease ran out (by `at`, default now): due for recovery. A
        choreographed saga has no lease: its next reaction is a queued job, run again by the
        queue if it dies."""
        return self.active().filter(lease_until__lt=at or Now(), style=Style.ORCHESTRATED)

    def choreographed(self) -> SagaQuerySet:
        return self.filter(style=Style.CHOREOGRAPHED)


class Saga(models.Model):
    """One long-lived transaction. What happened is in its log; `state` is a summary of it.

    `lease_until`: whoever advances the saga extends it with every log event. A saga that is
    not final and whose lease ran out is due for recovery (its coordinator died, or it waits
    to retry a compensation).
    """

    kind = models.CharField(max_length=50)
    style = models.CharField(max_length=20, choices=Style.choices, default=Style.ORCHESTRATED,
                             db_default=Style.ORCHESTRATED)
    state = models.CharField(max_length=20, choices=State.choices, default=State.RUNNING)
    payload = models.JSONField(default=dict, blank=True)
    fault_scope = models.CharField(max_length=64, blank=True, default="",
                                   help_text="faults armed for this saga only")
    lease_until = models.DateTimeField(null=True, blank=True)
    last_seq = models.PositiveIntegerField(
        default=0, help_text="seq of the last log entry (the next append takes the one after)")
    epoch = models.PositiveIntegerField(
        default=0, help_text="bumped by each coordinator's first append: a coordinator whose "
                             "epoch is no longer the saga's was taken over, and is refused")
    retry_from_seq = models.PositiveIntegerField(
        default=0, help_text="compensation failures before this log entry are forgiven (retry)")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SagaQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "lease_until"], name="saga_due_idx"),
                   # retention: the finished ones, oldest first
                   models.Index(fields=["updated_at"], name="saga_finished_idx",
                                condition=models.Q(state__in=FINAL_STATES))]

    def __str__(self) -> str:
        return f"{self.kind} saga {self.pk} ({self.state})"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


class SagaLog(models.Model):
    """Append-only: one row per event, numbered per saga, each committed before what it announces
    happens (sagas.services)."""

    # No index of its own: the unique (saga, seq) index serves every lookup by saga, and one
    # index fewer is one write fewer per event.
    saga = models.ForeignKey(Saga, on_delete=models.CASCADE, related_name="log", db_index=False)
    seq = models.PositiveIntegerField()
    event = models.CharField(max_length=20, choices=Event.choices)
    step = models.CharField(max_length=50, blank=True, default="")
    detail = models.TextField(blank=True, default="")
    pid = models.IntegerField(help_text="process that wrote the event (the coordinator)")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["saga", "seq"]
        constraints = [models.UniqueConstraint(fields=["saga", "seq"], name="saga_log_seq")]
        verbose_name = "saga log entry"
        verbose_name_plural = "saga log"

    def __str__(self) -> str:
        return f"{self.seq} {self.event} {self.step}".strip()
