"""A managed Redis commonly refuses CONFIG and KEYS. The project's reads of Redis (the
dashboard's status, reconciliation's "is Redis up?") must not take it for a dead one: a real
redis-server with both commands renamed away (`rename-command`), on a socket of its own."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
from django_q.conf import Conf

from devtools.processes import stop_pid
from jobs.queues import redis_queue
from jobs.selectors import redis_status
from tests.helpers import wait_until

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="Debian's redis-server is not installed")


@pytest.fixture
def managed_redis(tmp_path: Path, settings):
    """Start a Redis that refuses CONFIG and KEYS (more directives as arguments), and point
    the project at it."""
    started: list[subprocess.Popen] = []

    def start(*directives: str) -> redis.Redis:
        sock = tmp_path / f"redis-{len(started)}.sock"
        started.append(subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path), "--rename-command", "CONFIG", "",
             "--rename-command", "KEYS", "", *directives],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_until(sock.exists, timeout=10, message="the managed Redis's socket")
        settings.REDIS_URL = f"unix://{sock}?db=0"
        redis_queue.cache_clear()
        return redis.Redis(unix_socket_path=str(sock))

    try:
        yield start
    finally:
        redis_queue.cache_clear()
        for proc in started:
            stop_pid(proc.pid, grace=5, name="managed redis", wait=proc.wait)


def test_a_redis_refusing_config_and_keys_is_read_as_up(managed_redis, settings):
    conn = managed_redis()
    for refused in ("CONFIG", "KEYS"):
        with pytest.raises(redis.ResponseError, match="unknown command"):
            conn.execute_command(refused, "GET" if refused == "CONFIG" else "*")
    stat = {"pid": 4242, "workers": [{"pid": 1}, {"pid": 2}]}
    conn.set(f"{Conf.Q_STAT}:{settings.REDIS_CLUSTER}:host:4242", json.dumps(stat), ex=60)

    status = redis_status()

    assert status.up, status.error
    assert not status.refusing_writes
    assert [c["pid"] for c in status.clusters] == [4242]  # found by SCAN, not KEYS
    assert status.workers == 2


def test_a_managed_redis_refusing_writes_is_told_by_info(managed_redis):
    managed_redis("--min-replicas-to-write", "1")  # and no replica: every write is refused

    status = redis_status()

    assert status.up, status.error
    assert status.refusing_writes


@pytest.mark.cluster
@pytest.mark.any_broker
@pytest.mark.beside_conformance  # mostly waits: make test's second pass
@pytest.mark.django_db(transaction=True)
def test_the_redis_cluster_reconciliation_and_the_dashboard_work_without_config_and_keys(
        managed_redis, start_process, capsys):
    """Everything regular on the Redis side, against a Redis refusing CONFIG and KEYS: the
    reliable cluster takes, runs, records and removes; a worker killed mid-job loses nothing;
    reconciliation and the dashboard's checks read Redis as it is."""
    import os
    import signal

    from django.core.management import call_command
    from django.db import transaction

    from dashboard.selectors import consistency_checks
    from devtools.processes import children
    from faults import services as faults
    from faults.models import Fault
    from outbox.services import publish, relay_outbox
    from users.models import EmailSend, Mode, User
    from users.welcome import WELCOME_TOPIC

    managed_redis()
    users = [User.objects.create_user(username=f"m{i}", signup_mode=Mode.OUTBOX)
             for i in range(4)]
    with transaction.atomic():
        for user in users:
            publish(topic=WELCOME_TOPIC, payload={"user_id": user.pk})
    assert relay_outbox().published == 4
    faults.arm(point="email.send", action="delay", times=1, delay_ms=60_000)
    cluster = start_process("qcluster", name="qcluster-redis", ready="running.",
                            Q_CLUSTER_NAME="redis", Q_WORKERS="1")
    wait_until(lambda: Fault.objects.filter(point="email.send", fired__gte=1).exists(),
               timeout=30, message="the first job to reach its delay")
    status = redis_status()
    assert status.up, status.error
    assert (status.depth, status.in_flight) == (0, 4)  # taken: in the cluster's in-flight list
    [dispatcher] = cluster.children()
    [worker] = children(dispatcher)
    os.kill(worker, signal.SIGKILL)

    wait_until(lambda: EmailSend.objects.count() == 4, timeout=30,
               message=lambda: "every email to be sent:\n" + cluster.log()[-3000:])
    wait_until(lambda: redis_status().in_flight == 0, timeout=10,
               message="the finished jobs to leave the in-flight list")
    assert "unknown command" not in cluster.log()
    checks = {c.name: c.count for c in consistency_checks()}
    assert checks["reliable_signups_lost_email"] == 0
    assert checks["emails_duplicated"] == 0
    assert checks["outbox_lost_by_store"] == 0
    capsys.readouterr()
    call_command("reconcile", "--older-than", "0")
    assert "outbox messages published again: 0" in capsys.readouterr().out
    assert [c["pid"] for c in redis_status().clusters] == [dispatcher]  # its stat, by SCAN
