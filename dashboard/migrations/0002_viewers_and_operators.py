"""The two groups of common.permissions: "Viewers" look (the dashboard, its panels and every
page of the project's models, read-only), "Operators" also operate (the dashboard's controls,
the admin's actions, django-q2's queue and schedules). Add a user with the admin's Groups or
Users page, or `manage.py shell` (docs/permissions.md); the user must be staff too."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWERS, OPERATORS = "Viewers", "Operators"
# Every model of these apps, as they were when this migration was written: a model added
# later gets its view permission into Viewers and Operators by a migration of its own
# (tests/test_permissions.py fails until it does).
APPS = ["users", "outbox", "faults", "jobs", "pgbroker", "travel", "sagas", "experiments",
        "django_q"]


def create_groups(apps, schema_editor):
    db = schema_editor.connection.alias
    # Permissions are made after `migrate` (post_migrate): make them now, for every app
    # migrated so far, so the groups can be given them on a fresh database too.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=db)
        app_config.models_module = None
    fill_groups(apps, db)


def fill_groups(apps, db: str) -> None:
    """Make both groups and give them their permissions (which must exist)."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    views = list(Permission.objects.using(db).filter(content_type__app_label__in=APPS,
                                                     codename__startswith="view_"))
    dashboard = Permission.objects.using(db).filter(content_type__app_label="dashboard")
    view_dashboard = dashboard.get(codename="view_dashboard")
    operate = dashboard.get(codename="operate")
    viewers, _ = Group.objects.using(db).get_or_create(name=VIEWERS)
    viewers.permissions.add(view_dashboard, *views)
    operators, _ = Group.objects.using(db).get_or_create(name=OPERATORS)
    operators.permissions.add(view_dashboard, operate, *views)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias).filter(
        name__in=[VIEWERS, OPERATORS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("dashboard", "0001_initial"),
        ("users", "0002_reconcile_schedule"),
        ("outbox", "0003_relay_backstop_schedule"),
        ("jobs", "0002_cleanup_schedule"),
        ("pgbroker", "0002_enqueue_many"),
        ("travel", "0001_initial"),
        ("sagas", "0004_saga_epoch"),
        # Not faults nor experiments: development machinery, installed only when switched on
        # (project/settings.py), maybe after this ran. When either is migrated, the dashboard
        # gives the groups its view permissions (dashboard.groups).
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
