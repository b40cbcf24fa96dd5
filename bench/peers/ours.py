"""This project's engines in the peers' tables: django-q2 on pgbroker (broker and cluster),
and pgbroker's cluster on its Redis broker with reliable fetch, with the same job body as
every peer."""

from __future__ import annotations

from django.db import transaction
from django_q.models import Success
from django_q.tasks import async_task

from bench.peers.engines import STAGING, Engine, RedisEngine
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


class PgBrokerRedis(RedisEngine):
    """pgbroker's `qcluster` (one dispatcher, 2 workers) on its Redis broker with reliable
    fetch (pgbroker.reliable_redis): jobs taken are kept in the cluster's in-flight list until
    their results are committed in PostgreSQL."""

    slug = "pgbroker-redis"
    title = "**this project: pgbroker's cluster, Redis with reliable fetch, 2 workers**"

    def worker_commands(self) -> list[list[str]]:
        return [["pgbroker_qcluster"]]

    def worker_env(self) -> dict[str, str]:
        return {"PEERS_Q_BROKER": "reliable-redis"}

    def _broker(self) -> ReliableRedis:
        return ReliableRedis()  # django_q:peers:q at Q_CLUSTER["redis"]: PEERS_REDIS_URL

    def enqueue_many(self, n: int, *, prefix: str = "t") -> list[str]:
        keys = [f"{prefix}-{i}" for i in range(n)]
        staged = ReliableRedis(list_key=STAGING)
        for key in keys:
            async_task(Q_NOTHING, key, broker=staged)
        self.expected = n
        self.publish(staged.list_key, self._broker().list_key)
        return keys

    def succeeded(self) -> int:
        return Success.objects.filter(func=Q_NOTHING).count()

    def enqueue_one(self, key: str, *, sleep: float = 0.0) -> None:
        broker = self._broker()
        with transaction.atomic():
            transaction.on_commit(lambda: async_task(Q_NOOP, key, sleep, broker=broker))

    def queued(self) -> int:
        broker = self._broker()
        return int(self.redis.llen(broker.list_key)) + len(broker.in_flight())
