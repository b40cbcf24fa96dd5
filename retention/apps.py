from django.apps import AppConfig


class RetentionConfig(AppConfig):
    name = "retention"
    verbose_name = "Retention"

    def ready(self) -> None:
        from pgbroker import scheduler as schedules
        from retention import checks, dashboard, rules  # noqa: F401 (checks: registers)

        rules.register_builtin()
        dashboard.register()
        schedules.register("prune", "retention.tasks.prune", minutes=10)
