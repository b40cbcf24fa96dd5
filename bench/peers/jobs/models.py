from django.db import models


class Execution(models.Model):
    """One run of a job body: written by the body itself, first thing, in its own commit.

    Times are `time.time()` of the worker, on the same clock as the runner's commit timestamps.
    A body killed mid-run leaves `finished_at` empty; two rows with `finished_at` for one key
    are a duplicate effect.
    """

    job_key = models.CharField(max_length=64, db_index=True)
    pid = models.IntegerField()
    started_at = models.FloatField()
    finished_at = models.FloatField(null=True)

    def __str__(self) -> str:
        return f"{self.job_key} in pid {self.pid}"
