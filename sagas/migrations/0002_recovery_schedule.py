from django.db import migrations
from django.utils import timezone


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    # The backstop for sagas whose coordinator died when no `recover_sagas --follow` runs.
    Schedule.objects.update_or_create(
        name="recover sagas",
        defaults={
            "func": "sagas.tasks.recover_sagas",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
            "next_run": timezone.now(),
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="recover sagas").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sagas", "0001_initial"),
        ("django_q", "0018_task_success_index"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
