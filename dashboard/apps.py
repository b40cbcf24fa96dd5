from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        # imported here, not at the top: apps.py is loaded before any app's models are
        from dashboard import groups, infrastructure
        from pgbroker import scheduler as schedules

        infrastructure.register()
        # the tallies' change rows folded into one row per counter: a sum stays a few rows
        schedules.register("fold tallies", "dashboard.tasks.fold_tallies", minutes=1)
        # after auth's create_permissions (connected first, auth's ready ran before this one)
        post_migrate.connect(groups.give_views, dispatch_uid="dashboard.groups.give_views")
