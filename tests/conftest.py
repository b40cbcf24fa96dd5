import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from common import sideconn
from devtools import local_redis
from jobs.queues import redis_queue
from tests.helpers import CHROMIUM, LAUNCH_ARGS, Process, wait_until


@pytest.fixture(scope="session", autouse=True)
def _test_redis() -> Iterator[None]:
    """The suite's own Redis database (15; TEST_REDIS_DB: `make test` runs the browser tests
    beside the ORM pass on 14) on the same server, so a demo's queue on 0 is left alone; the
    cluster subprocesses get it through REDIS_URL (tests.helpers.subprocess_env). The
    project-local server, if nothing had started it before the session, is stopped after."""
    settings.REDIS_URL = local_redis.with_db(settings.REDIS_URL,
                                             int(os.environ.get("TEST_REDIS_DB", "15")))
    redis_queue.cache_clear()
    ours = not local_redis.external() and not local_redis.is_running(local_redis.server())
    yield
    redis_queue.cache_clear()
    if ours:  # a bare `pytest` (no `make test`): the tests started it, so they stop it
        local_redis.stop(quiet=True)


@pytest.fixture(autouse=True)
def _empty_redis() -> None:
    """Every test starts with an empty Redis database that accepts writes; a test that
    stopped the project-local Redis gets it started again."""
    if not local_redis.external():
        local_redis.start()
    conn = redis_queue().connection
    conn.config_set("min-replicas-to-write", 0)
    conn.flushdb()


@pytest.fixture(autouse=True)
def _no_faults_left_armed(request) -> Iterator[None]:
    """Faults are stored through a separate autocommit connection, outside the test's
    transaction, so a test's rollback does not remove them: delete them after every test."""
    yield
    if {"db", "transactional_db"} & set(request.fixturenames):  # a test that had a database
        with sideconn.side_cursor() as cur:
            cur.execute("DELETE FROM faults_fault")


@pytest.fixture(scope="session", autouse=True)
def _close_side_connection(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Before pytest-django drops the test database: close every side connection of this
    process (the live server's request threads open some), then end any session still on
    the database, as DROP DATABASE ... WITH (FORCE) would: the browser pass leaves one
    Django connection of a live-server request thread open, and a SIGKILLed process's
    backend may still be on its way out. Without this the drop fails ("being accessed by
    other users") and the database is left behind."""
    yield
    sideconn.close_all()
    from django.db import OperationalError, connection

    connection.close()  # it may be broken (a test restarted the server): a fresh one
    others = ("FROM pg_stat_activity WHERE datname = current_database() "
              "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")

    def left() -> list[tuple]:
        with connection.cursor() as cur:
            cur.execute(f"SELECT pid, application_name, left(query, 60) {others}")
            return cur.fetchall()

    with django_db_blocker.unblock():
        try:
            connection.ensure_connection()
        except OperationalError:
            return  # no server (a run that needed no database): nothing to end
        with connection.cursor() as cur:
            cur.execute(f"SELECT pg_terminate_backend(pid) {others}")
        wait_until(lambda: not left(), timeout=10,
                   message=lambda: f"the sessions left on the test database to end: {left()}")
        connection.close()


@pytest.fixture
def start_process(tmp_path) -> Iterator:
    """Start manage.py commands as real processes on the test database; stopped at teardown
    (SIGTERM, then SIGKILL of the group), so no test leaves a cluster consuming the queue."""
    started: list[Process] = []

    def start(*args: str, name: str | None = None, ready: str | None = None, **env: str):
        proc = Process(*args, log_dir=tmp_path, name=name or args[0], **env)
        started.append(proc)
        if ready:
            proc.wait_for_log(ready)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def qcluster(transactional_db, start_process) -> Process:
    """A real `manage.py qcluster`. Needs committed rows: the cluster is another process."""
    return start_process("qcluster", ready="running.")


@pytest.fixture
def redis_cluster(transactional_db, start_process) -> Process:
    """The second cluster, on Redis (Sidekiq's role): `Q_CLUSTER_NAME=redis manage.py qcluster`."""
    return start_process("qcluster", name="qcluster-redis", ready="running.",
                         Q_CLUSTER_NAME=settings.REDIS_CLUSTER)


@pytest.fixture
def page():
    """A Chromium page (the browser tests), 1400 x 1000."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        yield context.new_page()
        browser.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where the browser tests' screenshots go: $SCREENSHOT_DIR (docs/), else tmp."""
    return Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
