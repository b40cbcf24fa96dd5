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
