"""The log's foreign key loses its own index: the unique (saga, seq) index serves every lookup
by saga. Dropped CONCURRENTLY, and the constraint is left as it is (Django's AlterField would
drop and re-add it, checking every row of a year of history under a lock)."""

import django.db.models.deletion
from django.db import migrations, models

INDEX = "sagas_sagalog_saga_id_cef79dc3"


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("sagas", "0007_style_db_default"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="sagalog",
                    name="saga",
                    field=models.ForeignKey(db_index=False,
                                            on_delete=django.db.models.deletion.CASCADE,
                                            related_name="log", to="sagas.saga"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}",
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} "
                    "ON sagas_sagalog (saga_id)",
                ),
            ],
        ),
    ]
