"""The job queues under test, behind one interface (import after `django.setup()`).

An engine enqueues the benchmark job (`bench.peers.jobs.tasks.run_body` behind its own API),
starts and stops its real worker processes, and says how many of its jobs are not finished yet.
To add a queue, subclass `Engine`, fill in the four abstract pieces and add an instance to
`ENGINES`; bench/peers/run.py measures every engine the same way.

Worker processes run `bench/peers/manage.py ...` in their own session (process group) and are
stopped by pid: SIGTERM to the main pid, a grace period, then SIGKILL of the whole group
(devtools/processes.py `stop_pid`). The harness also plays the supervisor (systemd
`Restart=always`): after `kill()` it starts a worker whose main process died again at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from django.db import transaction
from django_q.models import OrmQ, Success
from django_q.tasks import async_task
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult
from procrastinate.contrib.django.models import ProcrastinateJob

from bench.peers.jobs.tasks import Q_NOOP, Q_NOTHING, p_noop, p_nothing, t_noop, t_nothing
from devtools.processes import stop_pid

BASE_DIR = Path(__file__).resolve().parent.parent.parent
MANAGE = str(BASE_DIR / "bench" / "peers" / "manage.py")
LOG_DIR = BASE_DIR / "var" / "log"


class Engine:
    """One queue in one configuration: a row of the results table."""

    slug = "engine"  # short id for PEERS_ENGINES and log file names
    title = "engine"  # the table's first column
    grace = 30.0  # seconds a worker may take to stop after SIGTERM before its group is killed
    crashes: int | None = None  # crash probes (None: PEERS_CRASH); each may wait the timeout
    crash_timeout: float | None = None  # seconds to wait for a redelivery (None: the default)

    def __init__(self) -> None:
        self.spawned: list[tuple[list[str], subprocess.Popen]] = []

    # --- what each engine provides ------------------------------------------------------------
    def worker_commands(self) -> list[list[str]]:
        """`manage.py` arguments of each worker process to start."""
        raise NotImplementedError

    def worker_env(self) -> dict[str, str]:
        return {}

    def enqueue_many(self, n: int, *, prefix: str = "t") -> list[str]:
        """Enqueue `n` jobs that do nothing (keys `prefix-0` ...) in one transaction."""
        raise NotImplementedError

    def succeeded(self) -> int:
        """Jobs this engine recorded as done successfully (its own bookkeeping)."""
        raise NotImplementedError

    def enqueue_one(self, key: str, *, sleep: float = 0.0) -> None:
        """Enqueue one job in its own transaction; it is committed when this returns."""
        raise NotImplementedError

    def pending(self) -> int:
        """Benchmark jobs not finished yet: queued, leased or running."""
        raise NotImplementedError

    def setup(self) -> None:
        """Before each measurement, with no worker running (tables are emptied by the runner)."""

    # --- processes, the same for every engine --------------------------------------------------
    def start_workers(self) -> None:
        for argv in self.worker_commands():
            self.spawned.append((argv, self._spawn(argv)))

    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with open(LOG_DIR / f"peers-{self.slug}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, MANAGE, *argv], cwd=BASE_DIR, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, **self.worker_env()})

    def stop(self) -> None:
        for _, proc in self.spawned:
            stop_pid(proc.pid, grace=self.grace, name=f"{self.slug} worker", wait=proc.wait)
        self.spawned = []

    def owner(self, pid: int) -> subprocess.Popen | None:
        """The started process whose group `pid` belongs to (its main process or a child)."""
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            return None
        return next((p for _, p in self.spawned if p.pid == pgid), None)

    def kill(self, pid: int) -> bool:
        """SIGKILL `pid`, one of this engine's worker processes (the one running a job), then
        restart the worker if its main process died, as a supervisor would. Returns whether a
        worker was restarted."""
        proc = self.owner(pid)
        if proc is None:
            raise RuntimeError(f"pid {pid} is not one of {self.slug}'s worker processes")
        os.kill(pid, signal.SIGKILL)
        if pid != proc.pid:
            return False  # a child (django-q2's worker): its own parent deals with it
        proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # no child of the dead main may keep running
        for i, (argv, p) in enumerate(self.spawned):
            if p is proc:
                self.spawned[i] = (argv, self._spawn(argv))
        return True


class DjangoQ2(Engine):
    """django-q2 1.11.1, ORM broker, the stock `qcluster` (2 workers), tuned settings."""

    grace = 45.0

    crash_timeout = 130.0  # the lease (`retry` 120 s) brings the job back, nothing sooner

    def __init__(self, *, bulk: int) -> None:
        super().__init__()
        self.bulk = bulk
        self.crashes = 1 if bulk == 1 else 0  # 2 minutes a probe; bulk does not change it
        self.slug = f"django-q2-bulk{bulk}"
        self.title = f"django-q2 1.11.1, qcluster 2 workers, bulk {bulk}"

    def worker_commands(self) -> list[list[str]]:
        return [["qcluster"]]

    def worker_env(self) -> dict[str, str]:
        return {"PEERS_Q_BULK": str(self.bulk)}

    def enqueue_many(self, n: int, *, prefix: str = "t") -> list[str]:
        keys = [f"{prefix}-{i}" for i in range(n)]
        with transaction.atomic():
            for key in keys:
                async_task(Q_NOTHING, key)
        return keys

    def succeeded(self) -> int:
        return Success.objects.filter(func=Q_NOTHING).count()

    def enqueue_one(self, key: str, *, sleep: float = 0.0) -> None:
        with transaction.atomic():
            async_task(Q_NOOP, key, sleep)

    def pending(self) -> int:
        return OrmQ.objects.count()  # a row stays until the monitor acknowledges the task


class Procrastinate(Engine):
    """procrastinate 3.x through procrastinate.contrib.django, one `procrastinate worker`."""

    def __init__(self, *, concurrency: int) -> None:
        super().__init__()
        self.concurrency = concurrency
        if concurrency != 1:
            self.crashes = 0  # the stalled-job recipe, not the concurrency, decides
        self.slug = f"procrastinate-c{concurrency}"
        self.title = f"procrastinate 3.10.0, 1 worker, concurrency {concurrency}"

    def worker_commands(self) -> list[list[str]]:
        return [["procrastinate", "worker", "--concurrency", str(self.concurrency)]]

    def enqueue_many(self, n: int, *, prefix: str = "t") -> list[str]:
        keys = [f"{prefix}-{i}" for i in range(n)]
        with transaction.atomic():
            for start in range(0, n, 1000):
                p_nothing.batch_defer(*({"key": k} for k in keys[start:start + 1000]))
        return keys

    def succeeded(self) -> int:
        return ProcrastinateJob.objects.filter(task_name="peer_nothing",
                                               status="succeeded").count()

    def enqueue_one(self, key: str, *, sleep: float = 0.0) -> None:
        with transaction.atomic():
            p_noop.defer(key=key, sleep=sleep)

    def pending(self) -> int:
        return ProcrastinateJob.objects.filter(task_name__in=["peer_noop", "peer_nothing"],
                                               status__in=["todo", "doing"]).count()


class DjangoTasksDB(Engine):
    """django-tasks 0.12 (django.tasks backport) + django-tasks-db 0.13, `db_worker` processes."""

    def __init__(self, *, processes: int, interval: float = 0.1) -> None:
        super().__init__()
        self.processes = processes
        self.crashes = 1 if processes == 1 else 0  # never redelivered: one probe says so
        self.interval = interval
        self.slug = f"django-tasks-db-{processes}p"
        self.title = (f"django-tasks-db 0.13.0, {processes} db_worker"
                      f"{'s' if processes > 1 else ''}, interval {interval:g} s")

    def worker_commands(self) -> list[list[str]]:
        # -v 0: no INFO line per task (the other engines log at WARNING too)
        argv = ["db_worker", "--interval", f"{self.interval:g}", "--no-reload",
                "--no-startup-delay", "--verbosity", "0"]
        return [argv] * self.processes

    def enqueue_many(self, n: int, *, prefix: str = "t") -> list[str]:
        keys = [f"{prefix}-{i}" for i in range(n)]
        with transaction.atomic():
            for key in keys:
                t_nothing.enqueue(key)
        return keys

    def succeeded(self) -> int:
        return DBTaskResult.objects.filter(status=TaskResultStatus.SUCCESSFUL,
                                           task_path__endswith=".t_nothing").count()

    def enqueue_one(self, key: str, *, sleep: float = 0.0) -> None:
        with transaction.atomic():
            t_noop.enqueue(key, sleep)

    def pending(self) -> int:
        return DBTaskResult.objects.filter(
            status__in=[TaskResultStatus.READY, TaskResultStatus.RUNNING]).count()


ENGINES: list[Engine] = [
    DjangoQ2(bulk=1),
    DjangoQ2(bulk=10),
    Procrastinate(concurrency=1),
    Procrastinate(concurrency=4),
    Procrastinate(concurrency=10),
    DjangoTasksDB(processes=1),
    DjangoTasksDB(processes=2),
]


def _ours() -> Engine:
    from bench.peers.ours import PgBroker

    return PgBroker()


ENGINES.insert(0, _ours())
