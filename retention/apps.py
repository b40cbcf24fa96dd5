from django.apps import AppConfig


class RetentionConfig(AppConfig):
    name = "retention"
    verbose_name = "Retention"

    def ready(self) -> None:
        # imported here, not at the top: apps.py is loaded before any app's models are
        from pgbroker import scheduler as schedules
        from retention import checks, rules  # noqa: F401 (checks: registers)

        rules.register_builtin()
        schedules.register("prune", "retention.tasks.prune", minutes=10)
