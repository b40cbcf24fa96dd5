"""Real processes for tests: a qcluster or a relay against the test database, and waiting."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from django.conf import settings

from common.db import database_url
from common.sideconn import side_cursor
from devtools.processes import children, stop_pid
from jobs.selectors import uses_pgbroker

BASE_DIR = Path(__file__).resolve().parent.parent
# Short task timeout in tests. With Q_BROKER=orm the lease (retry) is then 4 x 3 s = 12 s, so a
# killed worker's task comes back within seconds, and still no running task is redelivered.
TEST_Q_TIMEOUT = 3
T = TypeVar("T")
# The browser tests: Debian's chromium, driven by Playwright (its own download does not work).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (for a web server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a process that must work on the test database, like the tests."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        Q_TIMEOUT=str(TEST_Q_TIMEOUT),
        Q_POLL="0.05",
        FAULTS_ENABLED="1",
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        OUTBOX_POLL_SECONDS="1",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="INFO",
        # the programs' status files (ops.programs): never over those of `make run`'s programs
        STATUS_DIR=str(BASE_DIR / "var" / "test-run"),
    )
    env.update(extra)
    return env


class Process:
    """A manage.py command running in its own process group, logging to a file."""

    def __init__(self, *args: str, log_dir: Path, name: str, **env: str) -> None:
        self.log_path = log_dir / f"{name}.log"
        self.name = name
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=subprocess_env(**env),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        wait_until(lambda: text in self.log(), timeout=timeout,
                   message=f"{self.name} never logged {text!r}:\n{self.log()[-3000:]}")

    def children(self) -> list[int]:
        return children(self.pid)

    def stop(self, grace: float = 30) -> str:
        return stop_pid(self.pid, grace=grace, name=self.name, wait=self.proc.wait)


def wait_until(predicate: Callable[[], T], *, timeout: float = 60, interval: float = 0.1,
               message: str | Callable[[], str] = "condition") -> T:
    """Poll `predicate` until it is truthy; `message` (or what it returns, when the wait
    failed: a process's log as it is then) says what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            said = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for {said}")
        time.sleep(interval)


def committed_queue_rows() -> int:
    """Rows in the broker's queue table, counted on a second connection: only committed rows
    are visible to it."""
    table = "pgbroker_job" if uses_pgbroker() else "django_q_ormq"
    with side_cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


def ensure_groups() -> None:
    """The Viewers and Operators groups: the migration made them; a transactional test's flush
    (which keeps permissions but not groups) may have removed them since: then run the
    migration's code again."""
    import importlib

    from django.apps import apps
    from django.contrib.auth.models import Group
    from django.db import connection

    from common.permissions import OPERATORS, VIEWERS

    if Group.objects.filter(name__in=[VIEWERS, OPERATORS]).count() != 2:
        groups = importlib.import_module("dashboard.migrations.0002_viewers_and_operators")
        groups.fill_groups(apps, connection.alias)


def times_booked(saga_id: int) -> dict[str, int]:
    """How many times each service booked this saga's step ({"hotel": 1, ...}; a service with
    no booking row is left out)."""
    from travel.services import MODELS

    return {service: row.times_booked for service, model in MODELS.items()
            if (row := model.objects.filter(saga_id=saga_id).first()) is not None}
