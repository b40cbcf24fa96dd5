"""The django-q2 broker class: `Q_CLUSTER["broker_class"] = "pgbroker.broker.PostgresBroker"`.

Producers use it through `async_task()`: one INSERT (a stored function) on the `orm` alias,
inside the caller's transaction when there is one. Consumers are this app's cluster
(`manage.py qcluster`, pgbroker.cluster), which claims, acknowledges and recovers jobs itself
through pgbroker.cluster; django-q2's stock cluster cannot run this broker (it has no notion
of a job's owner being alive), and `dequeue()` says so.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.module_loading import import_string
from django_q.brokers import Broker
from django_q.conf import Conf

from pgbroker.models import Job, JobQuerySet

CHANNEL = "pgbroker"  # the enqueue function's NOTIFY to an idle cluster (payload: the queue)
ENQUEUE_LOCK_CLASS = 29026  # the enqueue function's shared lock: pg_advisory_xact_lock_shared

STOCK_CLUSTER = (
    "pgbroker's queue is consumed by pgbroker's own cluster: run `manage.py qcluster` with "
    '"pgbroker" before "django_q" in INSTALLED_APPS (django-q2\'s cluster cannot hold a job '
    "only while its worker lives)"
)


def alias() -> str:
    return Conf.ORM or "default"


def configured() -> bool:
    """Is pgbroker the configured broker (decided from settings: no connection needed)?"""
    return bool(Conf.BROKER_CLASS) and issubclass(import_string(Conf.BROKER_CLASS),
                                                  PostgresBroker)


class Batch:
    """Packages enqueued inside `batched_enqueue()`, per queue, not yet written."""

    def __init__(self) -> None:
        self.packages: list[tuple[str, str]] = []

    def mark(self) -> int:
        return len(self.packages)

    def discard_since(self, mark: int) -> None:
        del self.packages[mark:]

    def write(self) -> int:
        by_queue: dict[str, list[str]] = {}
        for queue, package in self.packages:
            by_queue.setdefault(queue, []).append(package)
        with connections[alias()].cursor() as cur:
            for queue, packages in by_queue.items():
                cur.execute("SELECT count(*) FROM pgbroker_enqueue_many(%s, %s)",
                            [queue, packages])
        n, self.packages = len(self.packages), []
        return n


_batch: contextvars.ContextVar[Batch | None] = contextvars.ContextVar("pgbroker_batch",
                                                                     default=None)


@contextlib.contextmanager
def batched_enqueue() -> Iterator[Batch]:
    """Inside the block, async_task() on this broker only collects its package; they are
    written as one multi-row INSERT when the block ends without an error (so run it inside
    the transaction they belong to). `discard_since(mark)` drops what a failed step added."""
    batch = Batch()
    token = _batch.set(batch)
    try:
        yield batch
        batch.write()
    finally:
        _batch.reset(token)


class PostgresBroker(Broker):  # type: ignore[misc]  # django-q2 has no type hints
    @staticmethod
    def get_connection(list_key: str | None = None) -> BaseDatabaseWrapper:
        return connections[alias()]

    def enqueue(self, task: str) -> int | None:
        batch = _batch.get()
        if batch is not None:
            batch.packages.append((self.list_key or Conf.CLUSTER_NAME, task))
            return None
        # No close_old_connections() here (the stock ORM broker's), which would close the
        # caller's other connections in the middle of its transaction (django-q2 #293).
        with connections[alias()].cursor() as cur:
            cur.execute("SELECT pgbroker_enqueue(%s, %s)",
                        [self.list_key or Conf.CLUSTER_NAME, task])
            (job_id,) = cur.fetchone()
            return int(job_id)

    def dequeue(self) -> list[tuple[int, str]]:
        """Refused, in one line: a job taken here would belong to no cluster's key (liveness,
        pgbroker.cluster), so nothing could tell when to take it back."""
        raise NotImplementedError(STOCK_CLUSTER)

    def _jobs(self) -> JobQuerySet:
        return Job.objects.using(alias()).filter(queue=self.list_key)

    def queue_size(self) -> int:
        return int(self._jobs().ready().count())

    def lock_size(self) -> int:
        return int(self._jobs().claimed().count())

    def purge_queue(self) -> int:
        deleted, _ = self._jobs().delete()
        return deleted

    def delete_queue(self) -> int:
        return self.purge_queue()

    def delete(self, task_id: int | str) -> None:
        Job.objects.using(alias()).filter(pk=task_id).delete()

    def acknowledge(self, task_id: int | str) -> None:
        self.delete(task_id)

    def fail(self, task_id: int | str) -> None:
        self.delete(task_id)

    def ping(self) -> bool:
        with connections[alias()].cursor() as cur:
            cur.execute("SELECT 1")
        return True

    def info(self) -> str:
        return f"PostgreSQL (pgbroker) on {alias()}"
