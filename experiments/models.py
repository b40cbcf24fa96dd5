from django.db import models


class Status(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    DONE = "done", "done"
    FAILED = "failed", "failed (the experiment itself broke)"


class Experiment(models.Model):
    """One run of `manage.py experiment`: what was asked, what was done to the system (the
    fault timeline), what it did meanwhile (samples), and what survived (result)."""

    preset = models.CharField(max_length=20, blank=True, default="")
    params = models.JSONField(help_text="signups, sagas, kills, pg_restarts, ... and the seed")
    seed = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    phase = models.CharField(max_length=40, blank=True, default="")
    progress = models.FloatField(default=0.0, help_text="0 to 1")
    pid = models.IntegerField(null=True, blank=True, help_text="the process running it")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    timeline = models.JSONField(default=list, blank=True,
                                help_text="[{t, kind, target, pid, note}]: every fault injected")
    samples = models.JSONField(default=list, blank=True,
                               help_text="[{t, emails, sagas_done, users}]: progress over time")
    result = models.JSONField(null=True, blank=True)
    passed = models.BooleanField(null=True, blank=True,
                                 help_text="outbox and que lost and duplicated nothing, no saga "
                                           "half done, no flight booked twice, no long stall")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"experiment {self.pk} ({self.preset or 'custom'}, seed {self.seed})"
