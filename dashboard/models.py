from django.db import models


class Dashboard(models.Model):
    """No table: the two permissions of common.permissions hang on it (Django keeps
    permissions per model). `view_dashboard`: the dashboard and its panels. `operate`: change
    what runs (the dashboard's controls, the admin's retry, recover, arm and start actions,
    editing django-q2's queue and schedules). The groups "Viewers" and "Operators" carry them
    (migrations 0002)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_dashboard", "Can view the dashboard"),
            ("operate", "Can operate: arm faults, start trips and experiments, retry, "
                        "relay/recover now, break Redis, edit the queue and schedules"),
        ]

    def __str__(self) -> str:
        return "the dashboard"
