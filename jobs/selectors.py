"""The queue as the rest of the project sees it, whichever broker carries the jobs
(pgbroker by default, django-q2's ORM broker with Q_BROKER=orm)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis
from django.conf import settings
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Failure, OrmQ
from django_q.signing import SignedPackage

from jobs.models import JobRun
from jobs.queues import redis_queue
from pgbroker import selectors as pg
from pgbroker.broker import configured
from pgbroker.models import Job


def uses_pgbroker() -> bool:
    return configured()


@dataclass(frozen=True)
class QueueCounts:
    queued: int      # jobs the cluster will still run (waiting, claimed, or between retries)
    leased: int      # claimed by a cluster: running or prefetched
    failed: int      # django-q2 Failure rows
    parked: int      # our own poison-job ledger: gave up after JOB_MAX_ATTEMPTS
    queue_parked: int = 0  # pgbroker: jobs the queue itself gave up on, kept for a person
    retrying: int = 0      # pgbroker: waiting for their retry (backoff)
    broker: str = "orm"    # "pgbroker" or "orm": which admin page lists the jobs


def queue_counts() -> QueueCounts:
    failed = Failure.objects.count()
    parked = JobRun.objects.parked().count()
    if uses_pgbroker():
        c = pg.counts()
        return QueueCounts(queued=c.pending, leased=c.claimed, failed=failed, parked=parked,
                           queue_parked=c.parked, retrying=c.retrying, broker="pgbroker")
    now = timezone.now()
    return QueueCounts(queued=OrmQ.objects.count(),
                       leased=OrmQ.objects.filter(lock__gt=now).count(), failed=failed,
                       parked=parked)


@dataclass(frozen=True)
class QueuedTask:
    id: int
    func: str
    kwargs: dict
    parked: bool = False


def queued_tasks(*, include_parked: bool = False) -> list[QueuedTask]:
    """Every task still in the queue, decoded (payloads signed with another key are skipped)."""
    if uses_pgbroker():
        jobs = Job.objects.all() if include_parked else Job.objects.unparked()
        return [QueuedTask(id=v.id, func=v.func, kwargs=v.kwargs, parked=v.state == pg.State.PARKED)
                for v in pg.job_views(jobs) if v.func != "?"]
    tasks = []
    for row in OrmQ.objects.order_by("id"):
        try:
            task = row.task
        except Exception:  # a payload signed with another key: not ours to read
            continue
        tasks.append(QueuedTask(id=row.pk, func=str(task.get("func")),
                                kwargs=dict(task.get("kwargs", {}))))
    return tasks


def parked_tasks() -> list[QueuedTask]:
    """The jobs the queue gave up on, decoded (only pgbroker parks them): read from the parked
    rows alone, so a backlog of ready jobs costs nothing here."""
    if not uses_pgbroker():
        return []
    return [QueuedTask(id=v.id, func=v.func, kwargs=v.kwargs, parked=True)
            for v in pg.job_views(Job.objects.parked()) if v.func != "?"]


def queued_calls(func: str, *, include_parked: bool = False) -> list[dict]:
    """The kwargs of every job of `func` waiting in either store: PostgreSQL's queue (parked
    ones too if asked) and Redis's list."""
    waiting = [*queued_tasks(include_parked=include_parked), *redis_queued_tasks()]
    return [t.kwargs for t in waiting if t.func == func]


def queue_drained() -> bool:
    """Nothing left for a cluster to run (jobs the queue parked do not count)."""
    if uses_pgbroker():
        return not Job.objects.unparked().exists()
    return not OrmQ.objects.exists()


# --- Redis, the second store ------------------------------------------------------------------


@dataclass(frozen=True)
class RedisStatus:
    up: bool
    depth: int | None = None           # jobs waiting in the Redis cluster's list
    in_flight: int | None = None       # taken by a Redis cluster, not finished yet
    parked: int | None = None          # given up on (killed its worker max_attempts times)
    refusing_writes: bool = False      # min-replicas-to-write set with no replica: writes refused
    error: str = ""
    clusters: tuple[dict, ...] = ()    # the Redis clusters alive now (their published stat)
    url: str = ""

    @property
    def workers(self) -> int:
        return sum(len(c.get("workers", ())) for c in self.clusters)


def refusing_writes(conn: redis.Redis) -> bool:
    """Does Redis refuse writes for want of replicas (`min-replicas-to-write` set, none good)?
    Read from INFO, not CONFIG GET: managed Redis services commonly refuse CONFIG (and KEYS),
    and a status read must not take such a Redis for a dead one. INFO shows
    `min_slaves_good_slaves` only while `min-replicas-to-write` is set."""
    info = conn.info("replication")
    return "min_slaves_good_slaves" in info and int(info["min_slaves_good_slaves"]) == 0


def redis_status() -> RedisStatus:
    """Is Redis up, how deep is the Redis cluster's list, which clusters serve it."""
    queue = redis_queue()
    try:
        conn = queue.connection
        depth = conn.llen(queue.list_key)
        in_flight = len(queue.in_flight())
        parked = queue.parked_count()
        refusing = refusing_writes(conn)
        keys = list(conn.scan_iter(match=f"{Conf.Q_STAT}:{settings.REDIS_CLUSTER}:*", count=100))
        stats = [json.loads(v) for v in conn.mget(keys) if v] if keys else []
    except redis.RedisError as e:
        return RedisStatus(up=False, error=f"{type(e).__name__}: {e}", url=settings.REDIS_URL)
    return RedisStatus(up=True, depth=depth, in_flight=in_flight, parked=parked,
                       refusing_writes=refusing,
                       clusters=tuple(sorted(stats, key=lambda c: c.get("pid", 0))),
                       url=settings.REDIS_URL)


def redis_queued_tasks() -> list[QueuedTask]:
    """The jobs in Redis, decoded: waiting in the list, or taken by a Redis cluster and not
    finished (its in-flight list; a dead cluster's go back to the queue). [] when Redis is
    down: nothing can be read."""
    queue = redis_queue()
    try:
        packages = [*queue.connection.lrange(queue.list_key, 0, -1), *queue.in_flight()]
    except redis.RedisError:
        return []
    tasks = []
    for n, package in enumerate(packages):
        try:
            task = SignedPackage.loads(package)
        except Exception:  # signed with another key: not ours to read
            continue
        tasks.append(QueuedTask(id=n, func=str(task.get("func")),
                                kwargs=dict(task.get("kwargs", {}))))
    return tasks
