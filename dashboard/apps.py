from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        # imported here, not at the top: apps.py is loaded before any app's models are
        from dashboard import infrastructure
        from pgbroker import scheduler as schedules

        infrastructure.register()
        # the tallies' change rows folded into one row per counter: a sum stays a few rows
        schedules.register("fold tallies", "dashboard.tasks.fold_tallies", minutes=1)
