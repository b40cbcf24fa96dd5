"""django-q2's public API on pgbroker and on the stock ORM broker, side by side (issue 19).

Every test takes the package-scoped `broker` fixture, parametrized over BROKERS: the test
process then enqueues through that broker (django-q2's `Conf.BROKER_CLASS`), and real
clusters run for it, with the same settings otherwise:

- "pgbroker": `Q_BROKER=postgres manage.py qcluster` (pgbroker's cluster, the project's
  default);
- "orm": `Q_BROKER=orm` with django-q2's own, stock cluster (`django_q.cluster.Cluster`, run
  by django-q2's own qcluster command class: pgbroker's command shadows the name). It is the
  reference: what django-q2 does.

Three clusters per broker, started together once for the package, each on a queue of its
own (`Q_CLUSTER_NAME`; a test enqueues with `cluster=<queue>` for the other two):

- MAIN, queue "reliable": 2 workers, `timeout` 2 s, `max_attempts` 2; it alone runs the
  schedules (seeded due before it starts: django-q2's stock cluster runs its scheduler first
  30 s after it started, so the schedule tests run last, by when both have run them);
- ATTEMPTS: 1 worker recycled after every task, `timeout` 1 s, `max_attempts` 1 (is a job
  charged an attempt it never started?);
- SIGNALS: receivers of django-q2's signals connected in every process (tasks.py). Apart: on
  pgbroker a post_execute receiver sends every result down the slower path.

A pgbroker case that differs from stock today is marked `@differs(pgbroker="why")`: an xfail
(strict), so the suite is green now and turns red when the difference is fixed without
removing the mark. docs/pgbroker-conformance.md is the table of the results.

The tests commit for real (the clusters are other processes): `broker` opens the database for
the whole package and flushes it afterwards, as tests/users/test_signup_cluster.py does. Keys
and groups are unique per test, and each test leaves its queue empty for the next.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule
from django_q.signing import SignedPackage
from django_q.tasks import schedule

from pgbroker.models import Job
from tests.conformance import settings as conformance_settings
from tests.conformance import tasks
from tests.helpers import Process, wait_until

HERE = Path(__file__).resolve().parent
BROKER_CLASS = {"pgbroker": "pgbroker.broker.PostgresBroker", "orm": None, "orm-pgcluster": None}
Q_BROKER = {"pgbroker": "postgres", "orm": "orm", "orm-pgcluster": "orm"}
# CONFORMANCE_BROKERS=pgbroker,orm,orm-pgcluster adds the ORM broker under pgbroker's cluster
# (how `Q_BROKER=orm manage.py qcluster` runs it); not by default: 25 s more
BROKERS = [name.strip() for name in
           os.environ.get("CONFORMANCE_BROKERS", "pgbroker,orm").split(",") if name.strip()]
if unknown := set(BROKERS) - set(BROKER_CLASS):
    raise pytest.UsageError(f"CONFORMANCE_BROKERS: unknown {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(BROKER_CLASS)}")
SETTINGS = "tests.conformance.settings"
TASKS = "tests.conformance.tasks"
# django-q2's own qcluster command, as `manage.py qcluster` would run it without pgbroker
STOCK_QCLUSTER = ("from django.core.management import call_command; "
                  "from django_q.management.commands.qcluster import Command; "
                  "call_command(Command())")

MAIN = "reliable"  # Q_CLUSTER["name"]: the queue async_task() uses by default
ATTEMPTS = "conformance-attempts"
SIGNALS = "conformance-signals"
CLUSTERS = {  # JOB_MAX_ATTEMPTS: the project's ledger, kept equal (check reliable.W003)
    MAIN: {"Q_TIMEOUT": "2", "Q_MAX_ATTEMPTS": "2", "JOB_MAX_ATTEMPTS": "2"},
    ATTEMPTS: {"Q_WORKERS": "1", "Q_RECYCLE": "1", "Q_TIMEOUT": "1", "Q_MAX_ATTEMPTS": "1",
               "JOB_MAX_ATTEMPTS": "1"},
    SIGNALS: {"Q_WORKERS": "1", "Q_TIMEOUT": "2", "Q_MAX_ATTEMPTS": "2", "JOB_MAX_ATTEMPTS": "2",
              "CONFORMANCE_SIGNALS": "1"},
}

try:
    import croniter  # noqa: F401
except ImportError:
    croniter = None

# Due now (and one not), made before the clusters start; test_schedules.py checks them.
SCHEDULES = {
    "once": {"schedule_type": Schedule.ONCE},
    "minutes": {"schedule_type": Schedule.MINUTES, "minutes": 5},
    "hourly": {"schedule_type": Schedule.HOURLY},
    "daily": {"schedule_type": Schedule.DAILY},
    **({"cron": {"schedule_type": Schedule.CRON, "cron": "*/5 * * * *"}} if croniter else {}),
}


def differs(**reasons: str):
    """Mark a test as failing today on these brokers (`pgbroker="why"`, `orm_pgcluster=`):
    a strict xfail there."""

    def mark(func):
        func._conformance_xfail = {name.replace("_", "-"): why for name, why in reasons.items()}
        return func

    return mark


def last(func):
    """Run this test after the others of its broker (the schedules: see MAIN)."""
    func._conformance_last = True
    return func


@pytest.hookimpl(tryfirst=True)  # before pytest groups the items by the broker parameter
def pytest_collection_modifyitems(items) -> None:
    for item in items:
        reasons = getattr(getattr(item, "function", None), "_conformance_xfail", None)
        callspec = getattr(item, "callspec", None)
        if reasons and callspec is not None:
            reason = reasons.get(callspec.params.get("broker"))
            if reason:
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
    # `last` tests after the package's others (the session's other tests stay where they are)
    ours = [i for i, item in enumerate(items) if Path(item.path).is_relative_to(HERE)]
    moved = sorted((items[i] for i in ours),
                   key=lambda item: getattr(getattr(item, "function", None),
                                            "_conformance_last", False))
    for i, item in zip(ours, moved, strict=True):
        items[i] = item


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- the broker, in this process -----------------------------------------------------------


@pytest.fixture(scope="session")
def test_database(django_db_setup, django_db_blocker) -> Iterator[None]:
    """The test database. pytest-django creates it only when a collected test asks for `db`
    or `transactional_db`; these tests share theirs for the package instead (committed rows,
    a flush at the end), so when nothing else asked for it (this package run alone), make it
    here, as pytest-django would."""
    from django.test.utils import setup_databases, teardown_databases

    test_name = connection.creation._get_test_db_name()  # type: ignore[attr-defined]
    if connection.settings_dict["NAME"] == test_name:
        yield
        return
    with django_db_blocker.unblock():
        made = setup_databases(verbosity=0, interactive=False,
                               aliases={"default": "default"})
    try:
        yield
    finally:
        with django_db_blocker.unblock():
            teardown_databases(made, verbosity=0)


@pytest.fixture(scope="package", params=BROKERS)
def broker(request, test_database, django_db_blocker) -> Iterator[str]:
    """The package's tests on one broker: django-q2 in this process enqueues through it, the
    cache is the clusters' (a database cache), the event table is empty; afterwards the
    database is flushed."""
    name = request.param
    saved = Conf.BROKER_CLASS
    with django_db_blocker.unblock(), override_settings(CACHES=conformance_settings.CACHES):
        Conf.BROKER_CLASS = BROKER_CLASS[name]
        try:
            call_command("createcachetable", verbosity=0)
            with connection.cursor() as cur:
                cur.execute(tasks.CREATE)
                cur.execute(f"TRUNCATE {tasks.TABLE}")
            cache.clear()
            # the project's own schedules (migrations made some due now) are not under test
            Schedule.objects.all().delete()
            yield name
        finally:
            Conf.BROKER_CLASS = saved
            call_command("flush", interactive=False, verbosity=0)
            with connection.cursor() as cur:  # the tables that are no model's
                cur.execute(f"DROP TABLE IF EXISTS {tasks.TABLE}, "
                            f"{conformance_settings.CACHE_TABLE}")


# --- the clusters, other processes ---------------------------------------------------------


@dataclass
class Cluster:
    broker: str
    queue: str
    process: Process

    def log(self, tail: int = 3000) -> str:
        return self.process.log()[-tail:]

    def queued(self) -> list[dict]:
        """The task packages of this cluster's queue it will still run (pgbroker: not parked;
        the ORM broker: every row, leased or not)."""
        if self.broker == "pgbroker":
            payloads = Job.objects.filter(queue=self.queue).unparked() \
                .values_list("payload", flat=True)
        else:
            payloads = OrmQ.objects.filter(key=self.queue).values_list("payload", flat=True)
        return [SignedPackage.loads(p) for p in payloads]

    def queued_ids(self) -> set[str]:
        return {task["id"] for task in self.queued()}

    def wait_drained(self, timeout: float = 30) -> None:
        wait_until(lambda: not self.queued(), timeout=timeout,
                   message=lambda: f"the queue {self.queue} to drain ({len(self.queued())} "
                   f"left):\n{self.log()}")

    def settle(self, predicate, what: str, timeout: float = 30):
        return wait_until(predicate, timeout=timeout, interval=0.05,
                          message=lambda: f"{what}:\n{self.log()}")


def start_cluster(broker: str, queue: str, log_dir, **env: str) -> Cluster:
    """Started, not yet waited for (`wait_running`)."""
    env = {"DJANGO_SETTINGS_MODULE": SETTINGS, "Q_BROKER": Q_BROKER[broker],
           "Q_CLUSTER_NAME": queue, **env}
    if broker == "orm":
        process = Process("shell", "-c", STOCK_QCLUSTER, log_dir=log_dir, name=queue, **env)
    else:
        process = Process("qcluster", log_dir=log_dir, name=queue, **env)
    return Cluster(broker, queue, process)


@dataclass(frozen=True)
class Clusters:
    main: Cluster
    attempts: Cluster
    signals: Cluster
    seeded: dict  # schedule kind -> (pk, next_run it was made with)


def seed_schedules() -> dict:
    due = timezone.now() - timedelta(seconds=1)
    made = {kind: schedule(f"{TASKS}.run", f"schedule-{kind}", name=f"conformance-{kind}",
                           next_run=due, **options)
            for kind, options in SCHEDULES.items()}
    # schedule() ignores next_run for a cron schedule (croniter's next match): make it due too
    Schedule.objects.filter(pk__in=[s.pk for s in made.values()]).update(next_run=due)
    for s in made.values():
        s.refresh_from_db()
    made["later"] = schedule(f"{TASKS}.run", "schedule-later", name="conformance-later",
                             schedule_type=Schedule.MINUTES, minutes=5,
                             next_run=timezone.now() + timedelta(hours=1))
    return {kind: (s.pk, s.next_run) for kind, s in made.items()}


@pytest.fixture(scope="package")
def clusters(broker, tmp_path_factory) -> Iterator[Clusters]:
    seeded = seed_schedules()
    log_dir = tmp_path_factory.mktemp(f"clusters-{broker}")
    started = {queue: start_cluster(broker, queue, log_dir, **env)
               for queue, env in CLUSTERS.items()}
    try:
        for cluster in started.values():
            cluster.process.wait_for_log("running.")
        yield Clusters(started[MAIN], started[ATTEMPTS], started[SIGNALS], seeded)
    finally:
        for cluster in started.values():
            cluster.process.stop()


@pytest.fixture
def cluster(clusters) -> Iterator[Cluster]:
    """The main cluster; the test leaves its queue empty."""
    yield clusters.main
    clusters.main.wait_drained()


# --- what the tasks did --------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    key: str
    detail: str
    pid: int


def events(*, kind: str | None = None, key: str | None = None) -> list[Event]:
    sql = f"SELECT id, kind, key, detail, pid FROM {tasks.TABLE} WHERE true"
    params = []
    if kind is not None:
        sql += " AND kind = %s"
        params.append(kind)
    if key is not None:
        sql += " AND key = %s"
        params.append(key)
    with connection.cursor() as cur:
        cur.execute(sql + " ORDER BY id", params)
        return [Event(*row) for row in cur.fetchall()]


def runs(key: str) -> int:
    return len(events(kind="run", key=key))
