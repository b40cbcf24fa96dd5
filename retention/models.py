from django.db import models


class Pruned(models.Model):
    """The last prune of one rule (retention.registry): when, how many rows, how long."""

    rule = models.CharField(max_length=100, unique=True)
    finished_at = models.DateTimeField()
    deleted = models.BigIntegerField(default=0)
    seconds = models.FloatField(default=0.0)
    complete = models.BooleanField(default=True, help_text="false: stopped at its time budget")

    class Meta:
        verbose_name = "last prune"
        ordering = ["rule"]

    def __str__(self) -> str:
        return f"{self.rule}: {self.deleted} rows"
