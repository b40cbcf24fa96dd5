from django.db import models
from django.db.models.functions import Now


class Dashboard(models.Model):
    """No table: the two permissions of common.permissions hang on it (Django keeps
    permissions per model). `view_dashboard`: the dashboard and its panels. `operate`: change
    what runs (the dashboard's controls, the admin's retry, recover, arm and start actions,
    editing django-q2's queue and schedules). The groups "Viewers" and "Operators" carry them
    (migrations 0002)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_dashboard", "Can view the dashboard"),
            ("operate", "Can operate: arm faults, start trips and experiments, retry, "
                        "relay/recover now, break Redis, edit the queue and schedules"),
        ]

    def __str__(self) -> str:
        return "the dashboard"


class Tally(models.Model):
    """Counters kept in the same transactions as the rows they count.

    Each change is a row of its own (insert only: concurrent transactions never wait on a
    shared counter row); `dashboard.tallies.fold()` folds them into one row per name on a
    schedule, so a total is a sum over a handful of rows whatever the history."""

    name = models.CharField(max_length=100)
    delta = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["name"], name="dashboard_tally_name_idx")]

    def __str__(self) -> str:
        return f"{self.name} {self.delta:+d}"


class Watermark(models.Model):
    """How far an incremental audit has come: every row of `name` with an id at or below
    `position` was checked once, settled; what was not ok is a Finding."""

    name = models.CharField(max_length=100, unique=True)
    position = models.BigIntegerField(default=0)
    swept_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.position}"


class Finding(models.Model):
    """A row an audit left behind its watermark that was not ok: checked again at every look
    until it is (a lost email sent after all), then forgotten."""

    audit = models.CharField(max_length=100)
    subject = models.BigIntegerField(help_text="the audited row's id")
    verdict = models.CharField(max_length=100)
    found_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["audit", "subject"],
                                               name="dashboard_finding_once")]

    def __str__(self) -> str:
        return f"{self.audit} {self.subject}: {self.verdict}"
