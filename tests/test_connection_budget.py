"""The connection budget (docs/production.md): how many PostgreSQL connections each program
opens at most, with every worker having run jobs. Each program names its connections in
pg_stat_activity: Django's "reliable <program>", the side connection "<program>: side", the
relay's listener, and the broker's own sessions ("pgbroker <queue>", "pgbroker writer",
"pgbroker worker")."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django_q.tasks import async_task

from jobs.selectors import queue_drained
from sagas.models import Saga
from sagas.services import start_trip
from tests.helpers import wait_until
from users import services
from users.models import EmailSend, Mode

pytestmark = [pytest.mark.cluster, pytest.mark.any_broker, pytest.mark.beside_lab]
W = 2  # workers per cluster

# program -> (its connections' names, at most how many): the table of docs/production.md
BUDGET = {
    "qcluster (PostgreSQL)": (("pgbroker reliable", "pgbroker writer", "pgbroker worker",
                               "reliable qcluster default"), 2 + 3 * W),
    "qcluster (Redis)": (("reliable qcluster redis", "pgbroker redis-writer"), 2 + 2 * W),
    "relay_outbox --follow": (("reliable relay_outbox",), 3),
    "recover_sagas --follow": (("reliable recover_sagas",), 2),
}


def connections() -> dict[str, int]:
    with connection.cursor() as cur:
        cur.execute("""SELECT application_name, count(*) FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()
                       GROUP BY 1""")
        return dict(cur.fetchall())


def test_each_program_stays_within_its_connection_budget(transactional_db, start_process):
    workers = {"Q_WORKERS": str(W)}
    start_process("qcluster", ready="running.", **workers)
    start_process("qcluster", name="qcluster-redis", ready="running.", Q_CLUSTER_NAME="redis",
                  **workers)
    start_process("relay_outbox", "--follow", name="relay", ready="relaying outbox messages")
    start_process("recover_sagas", "--follow", name="recoverer", ready="recovering")
    n = 12  # signups in the three modes: every worker of both clusters gets some
    with transaction.atomic():
        for i in range(n):
            async_task(services.CREATE_USER_TASK, name=f"u{i}", mode=Mode.values[i % 3],
                       signup_id=f"s{i}")
    for i in range(4):
        start_trip(customer=f"c{i}")
    wait_until(lambda: EmailSend.objects.count() == n and queue_drained()
               and not Saga.objects.active().exists(), timeout=60,
               message="every signup's email and every trip")
    seen = connections()
    used = {program: sum(count for name, count in seen.items() if name.startswith(prefixes))
            for program, (prefixes, _) in BUDGET.items()}
    over = {p: f"{used[p]} > {most}" for p, (_, most) in BUDGET.items() if used[p] > most}
    assert not over, f"over budget: {over}; all: {seen}"
    assert used["qcluster (PostgreSQL)"] >= 1 + 2 * W, "each worker holds its cluster's key"
    unnamed = {name: c for name, c in seen.items()
               if not name.startswith(("reliable ", "pgbroker "))}
    assert not unnamed, f"connections that do not say what opened them: {unnamed}"
