from django.db import migrations
from django.utils import timezone


def add_schedule(apps, schema_editor):
    # The backstop for when no `relay_outbox --follow` runs (it died, or was never started):
    # the PostgreSQL cluster relays whatever is due once a minute.
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name="relay outbox",
        defaults={"func": "outbox.tasks.relay_outbox", "schedule_type": "I", "minutes": 1,
                  "repeats": -1, "next_run": timezone.now()},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="relay outbox").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("outbox", "0002_relay_attempt"),
        ("django_q", "0018_task_success_index"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
