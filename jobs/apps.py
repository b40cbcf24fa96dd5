from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from faults.points import register
        from jobs import checks  # noqa: F401 (registers the system checks)
        from pgbroker import scheduler as schedules

        register("redis.enqueue",
                 "just before a job is pushed to Redis (raise: Redis refuses the write)")
        schedules.register("cleanup task results", "jobs.tasks.cleanup_task_results",
                           schedule_type="D")
