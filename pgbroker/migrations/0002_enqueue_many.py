from django.db import migrations

# Many jobs in one INSERT (the outbox relay's batch), with pgbroker_enqueue's wake-up rule.
ENQUEUE_MANY = """
CREATE OR REPLACE FUNCTION pgbroker_enqueue_many(q text, packages text[]) RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(29026, hashtext(q));
  RETURN QUERY INSERT INTO pgbroker_job (queue, payload)
               SELECT q, p FROM unnest(packages) WITH ORDINALITY AS t(p, n) ORDER BY n
               RETURNING id;
  IF EXISTS (SELECT 1 FROM pgbroker_cluster WHERE queue = q AND idle) THEN
    PERFORM pg_notify('pgbroker', q);
  END IF;
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("pgbroker", "0001_initial")]

    operations = [
        migrations.RunSQL(ENQUEUE_MANY,
                          "DROP FUNCTION IF EXISTS pgbroker_enqueue_many(text, text[])"),
    ]
