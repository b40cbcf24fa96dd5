"""The `smoke` preset end to end: real supervised processes on a scratch database, kills,
a PostgreSQL restart, a Redis restart, a backend termination and a pause, then the check of
the whole history. The restarts are of a PostgreSQL and a Redis the experiment started for
the run (experiments.servers): the project's, which this suite runs on, run on untouched."""

import json

import pytest
from django.core.management import call_command
from django.db import connection

from devtools import local_postgres, local_redis
from experiments.models import Experiment, Status
from jobs.queues import redis_queue

pytestmark = [
    pytest.mark.experiment,
    pytest.mark.skipif(not (local_postgres.available() and local_redis.available()),
                       reason="needs PostgreSQL's server programs and redis-server for the "
                              "experiment's own"),
]


def _started_at() -> tuple[str, str]:
    """When the project's PostgreSQL and Redis started (a restart changes both)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_postmaster_start_time()")
        pg = str(cur.fetchone()[0])
    return pg, redis_queue().connection.info("server")["run_id"]


@pytest.mark.beside_conformance  # mostly waits: make test's second pass
def test_the_smoke_preset_loses_nothing_for_outbox_and_que(transactional_db, capsys):
    before = _started_at()
    call_command("experiment", "--preset", "smoke", "--seed", "7", "--json")
    assert _started_at() == before  # its restarts were of its own servers
    result = json.loads(capsys.readouterr().out)
    for mode in ("dual-write", "outbox", "que"):
        assert set(result["modes"][mode]) >= {"users", "lost", "duplicated"}
        assert result["modes"][mode]["users"] == 20
    for mode in ("outbox", "que"):
        assert result["modes"][mode]["lost"] == 0
        assert result["modes"][mode]["duplicated"] == 0
    assert set(result["sagas"]) >= {"completed", "compensated", "half_done",
                                    "flights_booked_twice"}
    assert result["sagas"]["half_done"] == 0
    assert result["sagas"]["flights_booked_twice"] == 0
    assert result["sagas"]["completed"] + result["sagas"]["compensated"] == 8
    assert result["faults"]["kills"] == 3
    assert result["faults"]["pg_restarts"] == 1
    assert result["quiesced_after_s"] is not None
    assert result["longest_stall_s"] <= 5
    run = Experiment.objects.get()
    assert run.status == Status.DONE
    assert run.passed is True
    assert [e["kind"] for e in run.timeline].count("kill") == 3
    assert run.samples, "throughput over time was sampled"
