"""The job queues under test, behind one interface (import after `django.setup()`).

An engine enqueues the benchmark job (`bench.peers.jobs.tasks.run_body` behind its own API),
starts and stops its real worker processes, and says how many of its jobs are not finished yet.
To add a queue, subclass `Engine`, fill in the four abstract pieces and add an instance to
`ENGINES`; bench/peers/run.py measures every engine the same way.

Worker processes run `bench/peers/manage.py ...` (Celery's: `python -m celery ... worker`, see
`program()`) in their own session (process group) and are stopped by pid: SIGTERM to the main
pid, a grace period, then SIGKILL of the whole group (devtools/processes.py `stop_pid`). The
harness also plays the supervisor (systemd `Restart=always`): after `kill()` it starts a worker
whose main process died again at once.

Two groups, by where the queue lives (`store`): PostgreSQL (the scratch database) and Redis
(database 11 of the project's Redis, `PEERS_REDIS_URL` in bench/peers/settings.py, flushed by
each Redis engine's `setup()`); job bodies record their runs in PostgreSQL either way.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis
from django.conf import settings
from django.db import transaction
from django_q.brokers.redis_broker import Redis as DjangoQRedis
from django_q.models import OrmQ, Success
from django_q.tasks import async_task
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult
from procrastinate.contrib.django.models import ProcrastinateJob

from bench.peers.celery_app import app as celery_app
from bench.peers.jobs.tasks import (
    Q_NOOP,
    Q_NOTHING,
    c_noop,
    c_nothing,
    p_noop,
    p_nothing,
    t_noop,
    t_nothing,
)
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
    lost: str = ""  # why a killed job never runs again, where that is by design (the table says)
    store = "PostgreSQL"  # where the queue lives: the results table groups engines by it

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

    def program(self, argv: list[str]) -> list[str]:
        """The command line of a worker process: `manage.py` of the peers' project by default."""
        return [sys.executable, MANAGE, *argv]

    # --- processes, the same for every engine --------------------------------------------------
    def start_workers(self) -> None:
        for argv in self.worker_commands():
            self.spawned.append((argv, self._spawn(argv)))

    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with open(LOG_DIR / f"peers-{self.slug}.log", "ab") as log:
            return subprocess.Popen(
                self.program(argv), cwd=BASE_DIR, stdout=log,
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


# --- Redis --------------------------------------------------------------------------------------
# The queue in Redis, the job bodies' Execution rows (and django-q2's results) in PostgreSQL.
#
# "N jobs queued beforehand" on Redis: a PostgreSQL engine's N jobs become visible to its
# workers at once, at the commit of one transaction. A Redis producer pushes one message at a
# time, and running workers would take the first ones while the rest are still being pushed. So
# `enqueue_many` pushes the very messages the queue's own API makes (`async_task()`,
# `apply_async()`) into a staging list, then RENAMEs it onto the list the workers pop from: one
# atomic command, Redis's counterpart of the commit (it wakes blocked BLPOP/BRPOP at once).
# Each job alone (`enqueue_one`) is sent as a Django project sends it: after its transaction
# commits (`transaction.on_commit`; Celery's `delay_on_commit`).

STAGING = "peers-staging"  # key prefix of the staging lists


class RedisEngine(Engine):
    """An engine whose queue lives in the peers' Redis database (PEERS_REDIS_URL)."""

    store = "Redis"

    def __init__(self) -> None:
        super().__init__()
        self.expected = 0  # jobs of the last `enqueue_many`, for `pending()`

    @functools.cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(settings.PEERS_REDIS_URL)

    def setup(self) -> None:
        self.redis.flushdb()
        self.expected = 0

    def publish(self, staged: str, live: str) -> None:
        """Make every message pushed to `staged` visible to the workers at once (on `live`)."""
        self.redis.rename(staged, live)

    def queued(self) -> int:
        """Messages in Redis not finished yet as far as Redis can tell (waiting, or taken and
        not acknowledged)."""
        raise NotImplementedError

    def pending(self) -> int:
        # Redis shows what waits; a job taken off the list and still running shows nowhere
        # (django-q2: no acknowledgement; Celery: acknowledged before it runs, by default). So
        # once nothing waits, the jobs not yet recorded as succeeded are the ones pending.
        waiting = self.queued()
        return waiting if waiting else max(self.expected - self.succeeded(), 0)


class DjangoQ2Redis(RedisEngine):
    """django-q2 1.11.1, its stock Redis broker (django_q.brokers.redis_broker.Redis) and its
    stock `qcluster` (2 workers), the project's tuned values where they apply."""

    slug = "django-q2-redis"
    title = "django-q2 1.11.1, stock Redis broker, qcluster 2 workers (no ack)"
    grace = 45.0
    # The broker pops a task (BLPOP) and keeps nothing: no acknowledgement, no lease. A task
    # whose worker dies is gone; one probe shows it, 20 s is plenty for "never".
    crashes = 1
    crash_timeout = 20.0
    lost = "popped, never acknowledged"

    def worker_commands(self) -> list[list[str]]:
        return [["qcluster"]]

    def worker_env(self) -> dict[str, str]:
        return {"PEERS_Q_BROKER": "redis"}

    @functools.cached_property
    def broker(self) -> DjangoQRedis:
        """The cluster's queue (django_q:peers:q), at Q_CLUSTER["redis"]: PEERS_REDIS_URL."""
        return DjangoQRedis()

    def enqueue_many(self, n: int, *, prefix: str = "t") -> list[str]:
        keys = [f"{prefix}-{i}" for i in range(n)]
        staged = type(self.broker)(list_key=STAGING)  # the same broker class, its own list
        for key in keys:
            async_task(Q_NOTHING, key, broker=staged)
        self.expected = n
        self.publish(staged.list_key, self.broker.list_key)
        return keys

    def succeeded(self) -> int:
        return Success.objects.filter(func=Q_NOTHING).count()

    def enqueue_one(self, key: str, *, sleep: float = 0.0) -> None:
        with transaction.atomic():
            transaction.on_commit(lambda: async_task(Q_NOOP, key, sleep, broker=self.broker))

    def queued(self) -> int:
        return self.redis.llen(self.broker.list_key)


CELERY_QUEUE = "celery"  # Celery's default queue: a Redis list of that name
NOTHING_ID = "nothing-"  # task ids of the throughput jobs: their result keys are counted


class CeleryRedis(RedisEngine):
    """Celery 5.7 with the Redis broker and the Redis result backend, as Celery's docs set it up
    for many short tasks (bench/peers/settings.py, CELERY_*): one worker, prefork pool of 2
    processes (`--concurrency 2`, the 2 cores), prefetch multiplier 64.

    Succeeded: Celery's own bookkeeping, the result backend: a `celery-task-meta-<id>` key per
    task with its state, what a Django team reads through `AsyncResult` (the common pairing
    with a Redis broker, and work per task as django-q2's result row is). The throughput jobs
    get ids `nothing-<key>` so that their keys are counted (SCAN, then the states read) and not
    the warm-up's. A counter incremented by the task would be the harness's bookkeeping, and
    Celery without results would do less per task than the peers that record them.
    """

    grace = 30.0

    def __init__(self, *, acks_late: bool) -> None:
        super().__init__()
        self.acks_late = acks_late
        if acks_late:
            # A dead pool process's task is rejected and requeued once the pool has noticed
            # (billiard, worker_lost_wait). Only if the worker's main process dies (the host,
            # the OOM killer) does it wait in kombu's "unacked" hash for visibility_timeout,
            # 1 h, and then for kombu's sweep, every ~100 s (interval 10 s x throttle 10): with
            # visibility_timeout 8 s by hand, the task ran again 91 s after such a kill.
            self.slug = "celery-redis-acks-late"
            self.title = ("Celery 5.7.0, Redis broker, prefork 2, prefetch 64, acks_late + "
                          "reject_on_worker_lost, visibility_timeout 1 h")
            self.crash_timeout = 20.0
        else:
            self.slug = "celery-redis"
            self.title = ("Celery 5.7.0, Redis broker, prefork 2, prefetch 64, "
                          "early ack (default)")
            self.crashes = 1  # acknowledged before it ran: gone, whatever the probe
            self.crash_timeout = 20.0
            self.lost = "acknowledged before it ran"

    def program(self, argv: list[str]) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "bench.peers.celery_app", *argv]

    def worker_commands(self) -> list[list[str]]:
        return [["worker", "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING",
                 "--hostname", f"{self.slug}@%h"]]

    def worker_env(self) -> dict[str, str]:
        return {"PEERS_CELERY_ACKS_LATE": "1" if self.acks_late else "0"}

    def enqueue_many(self, n: int, *, prefix: str = "t") -> list[str]:
        keys = [f"{prefix}-{i}" for i in range(n)]
        # the same messages, to Redis keys under the staging prefix (kombu's global_keyprefix)
        with celery_app.connection_for_write(
                transport_options={"global_keyprefix": f"{STAGING}:"}) as conn:
            for key in keys:
                c_nothing.apply_async((key,), task_id=f"{NOTHING_ID}{key}", connection=conn)
        self.expected = n
        self.publish(f"{STAGING}:{CELERY_QUEUE}", CELERY_QUEUE)
        return keys

    def succeeded(self) -> int:
        keys = list(set(self.redis.scan_iter(f"celery-task-meta-{NOTHING_ID}*", count=1000)))
        done = 0
        for start in range(0, len(keys), 1000):
            for raw in self.redis.mget(keys[start:start + 1000]):
                done += raw is not None and json.loads(raw)["status"] == "SUCCESS"
        return done

    def enqueue_one(self, key: str, *, sleep: float = 0.0) -> None:
        with transaction.atomic():
            c_noop.delay_on_commit(key, sleep)

    def queued(self) -> int:
        # waiting in the list, and taken by the worker but not acknowledged (kombu's "unacked"
        # hash: prefetched ones, and with acks_late the running ones too)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(CELERY_QUEUE).hlen("unacked")
            return sum(pipe.execute())


ENGINES: list[Engine] = [
    DjangoQ2(bulk=1),
    DjangoQ2(bulk=10),
    Procrastinate(concurrency=1),
    Procrastinate(concurrency=4),
    Procrastinate(concurrency=10),
    DjangoTasksDB(processes=1),
    DjangoTasksDB(processes=2),
    # Redis, after every PostgreSQL engine
    DjangoQ2Redis(),
    CeleryRedis(acks_late=False),
    CeleryRedis(acks_late=True),
]


def _ours() -> list[Engine]:
    from bench.peers.ours import PgBroker, PgBrokerRedis

    return [PgBroker(), PgBrokerRedis()]


first, redis_first = _ours()
ENGINES.insert(0, first)
ENGINES.insert(next(i for i, e in enumerate(ENGINES) if e.store == "Redis"), redis_first)
