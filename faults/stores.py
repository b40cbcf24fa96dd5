"""Break the second store on purpose: stop Redis, start it again, make it refuse writes, or
make it lose the jobs it holds (as a crash without persistence, or a failover, does).

Stopping and starting work on the project-local Redis only (devtools/local_redis.py); with
REDIS_URL pointing elsewhere they refuse, rather than shut down a server we do not own.
Refusing writes uses Redis's own `min-replicas-to-write`: with no replica attached, every
write (RPUSH, and the cluster's BLPOP) is answered NOREPLICAS.
"""

from __future__ import annotations

import redis

from devtools import local_redis
from faults.services import FAULTS_DISABLED, FaultError, enabled
from jobs.queues import redis_queue

NOT_OURS = "REDIS_URL points at a Redis this project did not start: stop and start it yourself"
DOWN = "Redis is down: {error}"


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
            queue = redis_queue()
            n = queue.connection.llen(queue.list_key)
            queue.connection.delete(queue.list_key)
            return f"Redis lost its {n} queued job(s)"
    except redis.RedisError as e:
        raise FaultError(DOWN.format(error=e)) from e
    raise FaultError(f"unknown Redis action {action!r}; use one of: "
                     + ", ".join(a for a, _ in Action.CHOICES))
