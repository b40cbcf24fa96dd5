from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # imported here, not at the top: apps.py is loaded before any app's models are
        from django_q.models import Success

        from faults import stores
        from faults.points import register
        from jobs import checks  # noqa: F401 (registers the system checks)
        from jobs.models import JobRun
        from jobs.queues import redis_queue
        from retention import registry as retention

        register("redis.enqueue",
                 "just before a job is pushed to Redis (raise: Redis refuses the write)")
        stores.register_queue(redis_queue)  # what "Break Redis" breaks
        retention.register(retention.Rule(
            name="job_runs", label="finished job runs (the job ledger)", days="job_runs",
            queryset=lambda: JobRun.objects.done(), age_field="finished_at", order=20))
        retention.register(retention.Rule(
            name="job_results", label="job results (django-q2 successes)",
            days="job_results", queryset=lambda: Success.objects.all(), age_field="stopped",
            order=21))
