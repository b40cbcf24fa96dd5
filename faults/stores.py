"""Break the second store on purpose: stop Redis, start it again, make it refuse writes, or
make it lose the jobs it holds (as a crash without persistence, or a failover, does).

Stopping and starting work on the project-local Redis only (devtools/local_redis.py); with
REDIS_URL pointing elsewhere they refuse, rather than shut down a server we do not own.
Refusing writes uses Redis's own `min-replicas-to-write`: with no replica attached, every
write (RPUSH, and the cluster's BLPOP) is answered NOREPLICAS.

The queue to break is registered by the app that owns it (jobs/apps.py registers
`jobs.queues.redis_queue`): faults sits below jobs and imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from django_q.brokers.redis_broker import Redis as RedisBroker

from devtools import local_redis
from faults.services import FAULTS_DISABLED, FaultError, enabled

NOT_OURS = "REDIS_URL points at a Redis this project did not start: stop and start it yourself"
DOWN = "Redis is down: {error}"
NO_QUEUE = "no Redis queue is registered (jobs registers its own in JobsConfig.ready)"

_queue: Callable[[], RedisBroker] | None = None


def register_queue(queue: Callable[[], RedisBroker]) -> None:
    """The Redis queue to break: a callable returning a django-q2 Redis broker, whose
    `connection` the actions use and whose `list_key` "lose its queued jobs" empties."""
    global _queue
    _queue = queue


def redis_queue() -> RedisBroker:
    if _queue is None:
        raise FaultError(NO_QUEUE)
    return _queue()


class Action:
    STOP = "stop"
    START = "start"
    REFUSE_WRITES = "refuse-writes"
    ACCEPT_WRITES = "accept-writes"
    LOSE_JOBS = "lose-jobs"
    CHOICES = ((STOP, "stop Redis"), (START, "start Redis"),
               (REFUSE_WRITES, "refuse writes"), (ACCEPT_WRITES, "accept writes again"),
               (LOSE_JOBS, "lose its queued jobs (a crash without persistence)"))


def _local() -> None:
    if local_redis.external():
        raise FaultError(NOT_OURS)


def _conn() -> redis.Redis:
    return redis_queue().connection


def act(*, action: str) -> str:
    """Do one of Action's things to Redis; returns what happened, in words."""
    if not enabled():
        raise FaultError(FAULTS_DISABLED)
    try:
        if action == Action.STOP:
            _local()
            local_redis.stop(quiet=True)
            return "Redis stopped"
        if action == Action.START:
            _local()
            try:
                started = local_redis.start()
            except local_redis.LocalRedisError as e:
                raise FaultError(str(e)) from e
            return "Redis started" if started else "Redis was already running"
        if action == Action.REFUSE_WRITES:
            _conn().config_set("min-replicas-to-write", 1)
            return "Redis refuses writes (min-replicas-to-write 1, no replica)"
        if action == Action.ACCEPT_WRITES:
            _conn().config_set("min-replicas-to-write", 0)
            return "Redis accepts writes again"
        if action == Action.LOSE_JOBS:
            return _lose_jobs(redis_queue())
    except redis.RedisError as e:
        raise FaultError(DOWN.format(error=e)) from e
    raise FaultError(f"unknown Redis action {action!r}; use one of: "
                     + ", ".join(a for a, _ in Action.CHOICES))


def _lose_jobs(queue: RedisBroker) -> str:
    """What a crash without persistence does to the jobs: the queue and, with reliable fetch,
    the clusters' in-flight lists are gone (the jobs a cluster holds in memory still run)."""
    conn = queue.connection
    n = conn.llen(queue.list_key)
    taken = [k.decode() for k in conn.scan_iter(match=f"{queue.list_key}:inflight:*", count=100)]
    held = sum(conn.llen(k) for k in taken)
    conn.delete(queue.list_key, *taken)
    return f"Redis lost its {n} queued job(s)" + (f" and {held} in flight" if held else "")
