from django.db import models


class Action(models.TextChoices):
    RAISE = "raise", "raise an exception"
    CRASH = "crash", "crash the process (os._exit)"
    DELAY = "delay", "sleep for delay_ms"


class Fault(models.Model):
    """How one fault point is armed, for everyone (scope "") or for one job (scope = its token).

    Written and decremented only through faults.services on a separate autocommit connection,
    so a fault that fires inside a transaction which then rolls back still counts as fired.
    """

    point = models.CharField(max_length=100)
    scope = models.CharField(
        max_length=64, blank=True, default="",
        help_text="Empty: armed for whatever passes the point next. Otherwise one job's token.",
    )
    action = models.CharField(max_length=10, choices=Action.choices, blank=True, default="")
    remaining = models.PositiveIntegerField(
        null=True, blank=True, help_text="Fires this many more times; empty means always."
    )
    delay_ms = models.PositiveIntegerField(default=1000)
    fired = models.PositiveIntegerField(default=0)
    armed_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Named, so faults.services (which code everywhere imports to pass its fault points)
        # loads while the app is not installed (FAULTS_ENABLED off): the model is then unused.
        app_label = "faults"
        constraints = [
            models.UniqueConstraint(fields=["point", "scope"], name="fault_point_scope_unique")
        ]
        ordering = ["point", "scope"]

    def __str__(self) -> str:
        return f"{self.point} [{self.scope}]" if self.scope else self.point

    @property
    def is_armed(self) -> bool:
        return bool(self.action) and (self.remaining is None or self.remaining > 0)
