"""This project's engines in the peers' tables: django-q2 on pgbroker (broker and cluster),
and pgbroker's cluster on its Redis broker with reliable fetch, with the same job body as
every peer."""

from __future__ import annotations

import functools

from django.db import transaction
from django_q.models import Success
from django_q.tasks import async_task

from bench.peers.engines import DjangoQ2Redis, Engine
from bench.peers.jobs.tasks import Q_NOOP, Q_NOTHING
from pgbroker.broker import PostgresBroker
from pgbroker.models import Job
from pgbroker.reliable_redis import ReliableRedis


class PgBroker(Engine):
    """pgbroker: `manage.py qcluster` of this project (one dispatcher, 2 workers)."""

    slug = "pgbroker"
    title = "**this project: django-q2 on pgbroker, 2 workers**"

    def worker_commands(self) -> list[list[str]]:
        return [["pgbroker_qcluster"]]

    def worker_env(self) -> dict[str, str]:
        return {"PEERS_Q_BROKER": "postgres"}

    def _broker(self) -> PostgresBroker:
        return PostgresBroker(list_key="peers")

    def enqueue_many(self, n: int, *, prefix: str = "t") -> list[str]:
        keys = [f"{prefix}-{i}" for i in range(n)]
        broker = self._broker()
        with transaction.atomic():
            for key in keys:
                async_task(Q_NOTHING, key, broker=broker)
        return keys

    def succeeded(self) -> int:
        return Success.objects.filter(func=Q_NOTHING).count()

    def enqueue_one(self, key: str, *, sleep: float = 0.0) -> None:
        with transaction.atomic():
            async_task(Q_NOOP, key, sleep, broker=self._broker())

    def pending(self) -> int:
        return Job.objects.unparked().count()


class PgBrokerRedis(DjangoQ2Redis):
    """pgbroker's `qcluster` (one dispatcher, 2 workers) on its Redis broker with reliable
    fetch (pgbroker.reliable_redis): jobs taken are kept in the cluster's in-flight list until
    their results are committed in PostgreSQL. Enqueued and counted as django-q2's stock Redis
    broker is; a killed worker's job comes back, so it gets every crash probe."""

    slug = "pgbroker-redis"
    title = "**this project: pgbroker's cluster, Redis with reliable fetch, 2 workers**"
    grace = Engine.grace
    crashes = Engine.crashes
    crash_timeout = Engine.crash_timeout
    lost = Engine.lost

    def worker_commands(self) -> list[list[str]]:
        return [["pgbroker_qcluster"]]

    def worker_env(self) -> dict[str, str]:
        return {"PEERS_Q_BROKER": "reliable-redis"}

    @functools.cached_property
    def broker(self) -> ReliableRedis:
        return ReliableRedis()  # django_q:peers:q at Q_CLUSTER["redis"]: PEERS_REDIS_URL

    def queued(self) -> int:
        return int(self.redis.llen(self.broker.list_key)) + len(self.broker.in_flight())
