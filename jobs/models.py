from __future__ import annotations

from django.db import models
from django.db.models import Q


class RunState(models.TextChoices):
    PENDING = "pending"  # attempts left: run it
    DONE = "done"  # finished: a second delivery is skipped
    PARKED = "parked"  # out of attempts (a poison job): a person retries it


STATE_CONDITIONS = {
    RunState.PENDING: Q(finished_at__isnull=True, parked_at__isnull=True),
    RunState.DONE: Q(finished_at__isnull=False),
    RunState.PARKED: Q(finished_at__isnull=True, parked_at__isnull=False),
}


class JobRunQuerySet(models.QuerySet):
    def in_state(self, state: str) -> JobRunQuerySet:
        return self.filter(STATE_CONDITIONS[RunState(state)])

    def pending(self) -> JobRunQuerySet:
        return self.in_state(RunState.PENDING)

    def done(self) -> JobRunQuerySet:
        return self.in_state(RunState.DONE)

    def parked(self) -> JobRunQuerySet:
        return self.in_state(RunState.PARKED)


class JobRun(models.Model):
    """Our own attempt counter for one logical job (a signup, one user's welcome email...).

    django-q2 never counts an attempt that killed its worker, so a job that crashes its
    process would be redelivered forever (docs/design.md). Each attempt is counted here, in its own
    commit, before the job's side effects; after JOB_MAX_ATTEMPTS the job is parked.
    """

    key = models.CharField(max_length=200, unique=True)
    func = models.CharField(max_length=200, help_text="dotted path of the django-q2 task")
    kwargs = models.JSONField(default=dict, blank=True, help_text="to enqueue it again")
    attempts = models.PositiveIntegerField(default=0)
    last_pid = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    parked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    objects = JobRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "job run"
        indexes = [
            models.Index(fields=["created_at"], name="jobrun_created_idx"),  # the admin's list
            models.Index(fields=["finished_at"], name="jobrun_done_idx",
                         condition=STATE_CONDITIONS[RunState.DONE]),
            models.Index(fields=["parked_at"], name="jobrun_parked_idx",
                         condition=STATE_CONDITIONS[RunState.PARKED]),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def state(self) -> RunState:
        if self.finished_at:
            return RunState.DONE
        if self.parked_at:
            return RunState.PARKED
        return RunState.PENDING
