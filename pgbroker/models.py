from django.db import models
from django.db.models import F, Func, Q
from django.db.models.functions import Now

# A job's priority: higher runs first, 0 unless asked (pgbroker.broker.requested_priority).
# Each point counts as a minute of waiting: the claim takes ready jobs in the order of
# `run_at - priority minutes` (the SQL function pgbroker_rank, migration 0003, the one place of
# that rule), so a job that has waited long enough is ahead of every newer one, whatever their
# priority: nothing starves.
PRIORITY_MIN, PRIORITY_MAX = -100, 100


def check_priority(value: object) -> int:
    """`value` as a priority, or a one-line ValueError saying what is allowed."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"pgbroker: a job's priority is a whole number from {PRIORITY_MIN} "
                         f"to {PRIORITY_MAX}, not {value!r} ({type(value).__name__})")
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise ValueError(f"pgbroker: a job's priority is a whole number from {PRIORITY_MIN} "
                         f"to {PRIORITY_MAX}, not {value}")
    return value


def rank() -> Func:
    """The claim's order (then id): pgbroker_rank(run_at, priority), a UTC timestamp."""
    return Func(F("run_at"), F("priority"), function="pgbroker_rank",
                output_field=models.DateTimeField())


class JobQuerySet(models.QuerySet["Job"]):
    def parked(self) -> "JobQuerySet":
        return self.filter(parked_at__isnull=False)

    def unparked(self) -> "JobQuerySet":
        return self.filter(parked_at__isnull=True)

    def claimed(self) -> "JobQuerySet":
        """Held by a live or presumed-live cluster: running, or prefetched by it."""
        return self.unparked().filter(owner__isnull=False)

    def waiting(self) -> "JobQuerySet":
        """Not held by anyone, not parked: due now or waiting for a retry."""
        return self.unparked().filter(owner__isnull=True)

    def ready(self) -> "JobQuerySet":
        return self.waiting().filter(run_at__lte=Now())

    def retrying(self) -> "JobQuerySet":
        return self.waiting().filter(run_at__gt=Now())

    def pending(self) -> "JobQuerySet":
        """Everything a cluster will still run: claimed, ready or waiting for a retry."""
        return self.unparked()


class Job(models.Model):
    """One queued django-q2 task. The row exists until the task succeeded (or gave up and
    was acknowledged); a parked row stays for a person to look at.

    `owner` is the advisory-lock key of the cluster that claimed it. A cluster holds its key
    for as long as its database session lives, so a job whose owner's key is free belongs to
    a dead cluster and is taken back (liveness, not a lease).
    """

    queue = models.CharField(max_length=100)
    payload = models.TextField(help_text="django-q2's signed task package")
    created_at = models.DateTimeField(db_default=Now())
    run_at = models.DateTimeField(db_default=Now(), help_text="not before")
    attempts = models.PositiveIntegerField(db_default=0, help_text="times claimed")
    owner = models.BigIntegerField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    parked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, db_default="")
    priority = models.SmallIntegerField(
        db_default=0, help_text=f"higher runs first ({PRIORITY_MIN} to {PRIORITY_MAX}); each "
        "point counts as a minute of waiting")

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [
            # waiting jobs of one queue by run_at: when the next one falls due, how many are
            # ready (and the claim of clusters from before priorities, during an upgrade)
            models.Index(fields=["queue", "run_at", "id"], name="pgbroker_ready_idx",
                         condition=Q(owner__isnull=True, parked_at__isnull=True)),
            models.Index(fields=["owner"], name="pgbroker_owner_idx",
                         condition=Q(owner__isnull=False)),
            # the claim: waiting jobs of one queue in (rank, id) order, one index scan; run_at
            # last, so jobs not due yet (retries) are passed over in the index, never fetched
            models.Index("queue", rank(), "id", "run_at", name="pgbroker_claim_idx",
                         condition=Q(owner__isnull=True, parked_at__isnull=True)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority__gte=PRIORITY_MIN, priority__lte=PRIORITY_MAX),
                name="pgbroker_priority_range"),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.queue})"


class Cluster(models.Model):
    """A running cluster, as it last described itself (rows of dead clusters are removed by
    the cluster that takes their jobs back)."""

    owner = models.BigIntegerField(primary_key=True)
    queue = models.CharField(max_length=100)
    host = models.CharField(max_length=255)
    pid = models.IntegerField(help_text="the dispatcher process")
    started_at = models.DateTimeField(db_default=Now())
    seen_at = models.DateTimeField(db_default=Now())
    idle = models.BooleanField(db_default=False,
                               help_text="waiting for work: producers wake it with NOTIFY")
    workers = models.JSONField(db_default=models.Value([], output_field=models.JSONField()),
                               help_text="[{pid, job, since}] at seen_at")

    class Meta:
        ordering = ["started_at"]

    def __str__(self) -> str:
        return f"cluster {self.owner:x} on {self.host} (pid {self.pid})"
