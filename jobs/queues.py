"""Where a job goes: the PostgreSQL queue or Redis (the talk's second store, Sidekiq's role).

- `Store.POSTGRES`: `async_task()` on the default broker, on the business database's
  connection: inside `transaction.atomic()` the job commits or rolls back with the caller's rows.
- `Store.REDIS`: an `RPUSH` on the Redis server the second cluster (`Q_CLUSTER_NAME=redis
  manage.py qcluster`) pops from. It is written at once, whatever transaction the caller is in:
  Redis cannot join a PostgreSQL transaction. That is the dual-write problem, and why the
  outbox exists.

A Redis that is down or refuses writes raises `RedisUnavailable` (one line, the cause in it).
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Iterator

import redis
from django.conf import settings
from django.db import models
from django_q.tasks import async_task

from faults.services import fire
from pgbroker.reliable_redis import WAIT, ReliableRedis

REDIS_DOWN = "Redis refused the job ({error})"
TASK_NAME_MAX = 100  # django_q_task.name: a longer one makes the result's insert fail
SOCKET_TIMEOUT = 2.0  # seconds: a Redis that does not answer is down, not slow
# TCP keepalives (idle, interval, count): a Redis host cut off is noticed in seconds
KEEPALIVE = {socket.TCP_KEEPIDLE: 1, socket.TCP_KEEPINTVL: 1, socket.TCP_KEEPCNT: 3}


def connect(*, timeout: float = SOCKET_TIMEOUT) -> redis.Redis:
    """REDIS_URL with timeouts on every call and keepalives: a blocking call on a Redis that
    is gone (a partition drops packets without a word) fails instead of waiting for ever."""
    unix = settings.REDIS_URL.startswith("unix://")
    return redis.from_url(settings.REDIS_URL, socket_timeout=timeout,
                          socket_connect_timeout=SOCKET_TIMEOUT, retry_on_timeout=False,
                          **({} if unix else {"socket_keepalive": True,
                                              "socket_keepalive_options": KEEPALIVE}))


class Store(models.TextChoices):
    POSTGRES = "postgres", "PostgreSQL (in the caller's transaction)"
    REDIS = "redis", "Redis (a second store, written on its own)"


class RedisUnavailable(Exception):
    """Redis is down, unreachable, or refuses writes: the job was not enqueued."""


class RedisQueue(ReliableRedis):
    """The Redis cluster's queue for producers (an `RPUSH`, as django-q2's Redis broker does),
    connected to REDIS_URL with timeouts; it also reads the jobs the clusters have in flight.
    Inside `collect()` enqueue() only collects packages (pushed later in one round trip)."""

    def __init__(self) -> None:
        self.collected: list[bytes | str] | None = None
        super().__init__(list_key=settings.REDIS_CLUSTER)

    @staticmethod
    def get_connection(list_key: str | None = None) -> redis.Redis:
        return connect()

    def enqueue(self, task):
        if self.collected is not None:
            self.collected.append(task)
            return None
        fire("redis.enqueue")
        return self.connection.rpush(self.list_key, task)


class RedisClusterBroker(ReliableRedis):
    """The Redis cluster's broker (`Q_CLUSTER_NAME=redis qcluster`): reliable fetch
    (pgbroker.reliable_redis: a job taken is moved into the cluster's in-flight list, never
    held only in memory), with timeouts and keepalives on its connections, so a cut-off Redis
    is noticed in seconds, not after the kernel's retransmissions."""

    @staticmethod
    def get_connection(list_key: str | None = None) -> redis.Redis:
        return connect(timeout=WAIT + SOCKET_TIMEOUT)


@functools.cache
def redis_queue() -> RedisQueue:
    """One per process (its connection pool reconnects by itself after a Redis restart)."""
    return RedisQueue()


@contextlib.contextmanager
def unavailable_as_error() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as e:
        raise RedisUnavailable(REDIS_DOWN.format(error=_one_line(e))) from e


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def enqueue(*, store: Store | str, func: str, task_name: str | None = None, **kwargs) -> str:
    """Enqueue one job on `store`; returns django-q2's task id."""
    if task_name:
        kwargs["task_name"] = task_name[:TASK_NAME_MAX]
    if Store(store) == Store.POSTGRES:
        return async_task(func, **kwargs)
    with unavailable_as_error():
        return async_task(func, broker=redis_queue(), **kwargs)


class RedisBatch:
    """Jobs for Redis collected by `redis_batch()`, pushed in one round trip by `push()`."""

    def __init__(self, queue: RedisQueue) -> None:
        self.queue = queue
        self.packages: list[bytes | str] = []

    def add(self, func: str, **kwargs) -> None:
        self.queue.collected = self.packages
        try:
            async_task(func, broker=self.queue, **kwargs)
        finally:
            self.queue.collected = None

    def push(self) -> int:
        """RPUSH every collected package at once; Redis has accepted them when this returns."""
        if not self.packages:
            return 0
        with unavailable_as_error():
            fire("redis.enqueue")
            self.queue.connection.rpush(self.queue.list_key, *self.packages)
        n, self.packages = len(self.packages), []
        return n


def redis_batch() -> RedisBatch:
    return RedisBatch(redis_queue())
