from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("sagas", "0002_recovery_schedule")]

    operations = [
        migrations.AddField(
            model_name="saga",
            name="last_seq",
            field=models.PositiveIntegerField(
                default=0,
                help_text="seq of the last log entry (the next append takes the one after)"),
        ),
        migrations.RunSQL(
            "UPDATE sagas_saga s SET last_seq = (SELECT coalesce(max(seq), 0) "
            "FROM sagas_sagalog l WHERE l.saga_id = s.id)",
            migrations.RunSQL.noop),
    ]
