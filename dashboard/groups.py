"""The Viewers and Operators groups (dashboard/migrations/0002) look at every page of the
project's models. Two apps may be installed after that migration ran: faults and experiments,
development machinery that a production site installs only when switched on
(project/settings.py). When either is migrated, its view permissions go to both groups."""

from __future__ import annotations

from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db import DEFAULT_DB_ALIAS

from common.permissions import OPERATORS, VIEWERS

LATE_APPS = ("faults", "experiments")


def give_views(sender: AppConfig, *, using: str = DEFAULT_DB_ALIAS, apps=global_apps,
               **kwargs) -> None:
    """post_migrate, after auth made the app's permissions: both groups may view its models."""
    if sender.label not in LATE_APPS:
        return
    try:
        Group = apps.get_model("auth", "Group")
        Permission = apps.get_model("auth", "Permission")
    except LookupError:
        return
    views = list(Permission.objects.using(using).filter(content_type__app_label=sender.label,
                                                        codename__startswith="view_"))
    for group in Group.objects.using(using).filter(name__in=[VIEWERS, OPERATORS]):
        group.permissions.add(*views)
