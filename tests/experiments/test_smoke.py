"""The `smoke` preset end to end: real supervised processes on a scratch database, kills,
a PostgreSQL restart, a Redis restart, a backend termination and a pause, then the check of
the whole history. It restarts the project-local servers, so it runs on them only."""

import json
import os

import pytest
from django.core.management import call_command
from django.db import connection

from experiments.models import Experiment, Status

pytestmark = [
    pytest.mark.experiment,
    pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")),
                       reason="restarts the project-local PostgreSQL and Redis"),
]


def test_the_smoke_preset_loses_nothing_for_outbox_and_que(transactional_db, capsys):
    call_command("experiment", "--preset", "smoke", "--seed", "7", "--json")
    connection.close()  # the run restarted PostgreSQL under this connection
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
