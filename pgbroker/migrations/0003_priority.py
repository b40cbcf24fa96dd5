from django.db import migrations, models

# Priorities (models.PRIORITY_MIN..PRIORITY_MAX): a column, its range, the claim's order, and
# the enqueue functions taking a priority.

# The claim's order: the job counts as due a minute earlier per point of priority, so a job
# that has waited N minutes is ahead of every newer job of up to N points more (nothing
# starves). In UTC (AT TIME ZONE with a constant zone, then timestamp arithmetic) the whole
# expression is immutable, so it can be indexed (migration 0004), and PostgreSQL inlines the
# function both in that index and in the claim, which match.
RANK = """
CREATE OR REPLACE FUNCTION pgbroker_rank(run_at timestamptz, priority smallint)
RETURNS timestamp LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (run_at AT TIME ZONE 'UTC') - priority * interval '1 minute';
"""

# Enqueue as in 0001 (the wake-up rule is explained there), with a priority. `prio` is an
# integer so that a literal argument needs no cast (client-side binding); the column's CHECK
# refuses what is out of range. A call with two arguments (a producer of the version before)
# enqueues at priority 0.
ENQUEUE = """
DROP FUNCTION IF EXISTS pgbroker_enqueue(text, text);
CREATE OR REPLACE FUNCTION pgbroker_enqueue(q text, package text, prio integer DEFAULT 0)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  job_id bigint;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(29026, hashtext(q));
  INSERT INTO pgbroker_job (queue, payload, priority) VALUES (q, package, prio)
  RETURNING id INTO job_id;
  IF EXISTS (SELECT 1 FROM pgbroker_cluster WHERE queue = q AND idle) THEN
    PERFORM pg_notify('pgbroker', q);
  END IF;
  RETURN job_id;
END
$$;
"""

# Many jobs in one INSERT; `prios` beside `packages` (NULL, or shorter: priority 0).
ENQUEUE_MANY = """
DROP FUNCTION IF EXISTS pgbroker_enqueue_many(text, text[]);
CREATE OR REPLACE FUNCTION pgbroker_enqueue_many(q text, packages text[],
                                                 prios integer[] DEFAULT NULL)
RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(29026, hashtext(q));
  RETURN QUERY INSERT INTO pgbroker_job (queue, payload, priority)
               SELECT q, p, coalesce(r, 0)
                 FROM unnest(packages, prios) WITH ORDINALITY AS t(p, r, n)
                WHERE p IS NOT NULL
                ORDER BY n
               RETURNING id;
  IF EXISTS (SELECT 1 FROM pgbroker_cluster WHERE queue = q AND idle) THEN
    PERFORM pg_notify('pgbroker', q);
  END IF;
END
$$;
"""

# The functions of 0001 and 0002, for going back.
ENQUEUE_BEFORE = """
DROP FUNCTION IF EXISTS pgbroker_enqueue(text, text, integer);
CREATE OR REPLACE FUNCTION pgbroker_enqueue(q text, package text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  job_id bigint;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(29026, hashtext(q));
  INSERT INTO pgbroker_job (queue, payload) VALUES (q, package) RETURNING id INTO job_id;
  IF EXISTS (SELECT 1 FROM pgbroker_cluster WHERE queue = q AND idle) THEN
    PERFORM pg_notify('pgbroker', q);
  END IF;
  RETURN job_id;
END
$$;
"""

ENQUEUE_MANY_BEFORE = """
DROP FUNCTION IF EXISTS pgbroker_enqueue_many(text, text[], integer[]);
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

PRIORITY_RANGE = models.CheckConstraint(
    condition=models.Q(("priority__gte", -100), ("priority__lte", 100)),
    name="pgbroker_priority_range")


class Migration(migrations.Migration):
    dependencies = [("pgbroker", "0002_enqueue_many")]

    operations = [
        # a constant default: no table rewrite (PostgreSQL 11 and later)
        migrations.AddField(
            model_name="job",
            name="priority",
            field=models.SmallIntegerField(
                db_default=0, help_text="higher runs first (-100 to 100); each point counts as "
                "a minute of waiting"),
        ),
        # NOT VALID: no scan of the table under its lock here; 0004 validates it without
        # blocking writes
        migrations.RunSQL(
            "ALTER TABLE pgbroker_job ADD CONSTRAINT pgbroker_priority_range "
            "CHECK (priority >= -100 AND priority <= 100) NOT VALID",
            "ALTER TABLE pgbroker_job DROP CONSTRAINT IF EXISTS pgbroker_priority_range",
            state_operations=[migrations.AddConstraint(model_name="job",
                                                       constraint=PRIORITY_RANGE)]),
        migrations.RunSQL(RANK, "DROP FUNCTION IF EXISTS pgbroker_rank(timestamptz, smallint)"),
        migrations.RunSQL(ENQUEUE, ENQUEUE_BEFORE),
        migrations.RunSQL(ENQUEUE_MANY, ENQUEUE_MANY_BEFORE),
    ]
