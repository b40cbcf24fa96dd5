import django.db.models.expressions
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # built without blocking enqueues or claims on a queue table that is never idle
    atomic = False

    dependencies = [("pgbroker", "0003_priority")]

    operations = [
        # takes SHARE UPDATE EXCLUSIVE only: enqueues and claims go on while it scans
        migrations.RunSQL(
            "ALTER TABLE pgbroker_job VALIDATE CONSTRAINT pgbroker_priority_range",
            migrations.RunSQL.noop),
        # the claim: waiting jobs of one queue in (pgbroker_rank(run_at, priority), id) order;
        # run_at last, so jobs not due yet are passed over in the index, never fetched
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                models.F("queue"),
                django.db.models.expressions.Func(
                    models.F("run_at"), models.F("priority"), function="pgbroker_rank",
                    output_field=models.DateTimeField()),
                models.F("id"),
                models.F("run_at"),
                condition=models.Q(("owner__isnull", True), ("parked_at__isnull", True)),
                name="pgbroker_claim_idx"),
        ),
    ]
