"""This project's engine in the peers' table: django-q2 on pgbroker (broker and cluster),
with the same job body as every peer."""

from __future__ import annotations

from django.db import transaction
from django_q.models import Success
from django_q.tasks import async_task

from bench.peers.engines import Engine
from bench.peers.jobs.tasks import Q_NOOP, Q_NOTHING
from pgbroker.broker import PostgresBroker
from pgbroker.models import Job


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
