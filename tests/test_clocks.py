"""Times one process writes and another compares come from the database's clock: a process
whose wall clock is wrong (libfaketime, a real shifted clock for the whole process) still
agrees with the others on what is due, expired or old. Real subprocesses, real commits."""

from __future__ import annotations

import glob
import json
import subprocess
import sys

import pytest

from devtools import lab
from tests.helpers import BASE_DIR, subprocess_env

pytestmark = [
    pytest.mark.beside,
    pytest.mark.skipif(not glob.glob("/usr/lib/*/faketime/libfaketime.so.1"),
                       reason="libfaketime is missing (apt-get install faketime)"),
]


def manage_skewed(seconds: float, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR,
                          env=subprocess_env(**lab.faketime_env(seconds)),
                          capture_output=True, text=True, timeout=60)


# transactional_db: the other process must see the committed rows.
def test_a_recoverer_whose_clock_runs_a_minute_ahead_leaves_live_sagas_alone(transactional_db):
    """With its own clock it read a live saga's lease (10 s) as long expired, and took over a
    saga its coordinator may still be running."""
    from sagas.models import Saga
    from sagas.services import start_trip

    saga = start_trip(customer="ahead")  # no cluster runs it: its lease is all it has
    r = manage_skewed(60, "recover_sagas", "--once")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "recovered 0 saga(s)" in r.stdout, r.stdout
    assert [e.event for e in Saga.objects.get(pk=saga.pk).log.all()] == ["SAGA_START"]


def test_a_relay_whose_clock_runs_a_minute_behind_publishes_what_is_due(transactional_db):
    """With its own clock it saw every message as not yet available, for a minute."""
    from tests.outbox.test_outbox import publish_committed

    publish_committed(3)
    r = manage_skewed(-60, "relay_outbox", "--once", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["published"] == 3
