"""The django-q2 broker class: `Q_CLUSTER["broker_class"] = "pgbroker.broker.PostgresBroker"`.

Producers use it through `async_task()`: one INSERT (a stored function) on the `orm` alias,
inside the caller's transaction when there is one, at the priority asked for
(`requested_priority()`). Consumers are this app's cluster (`manage.py qcluster`,
pgbroker.cluster), which claims, acknowledges and recovers jobs itself through
pgbroker.cluster; django-q2's stock cluster cannot run this broker (it has no notion
of a job's owner being alive), and `dequeue()` says so.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.module_loading import import_string
from django_q import tasks
from django_q.brokers import Broker
from django_q.conf import Conf

from pgbroker.models import Job, JobQuerySet, check_priority

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


_priority: contextvars.ContextVar[int] = contextvars.ContextVar("pgbroker_priority", default=0)


@contextlib.contextmanager
def priority(value: int) -> Iterator[None]:
    """Jobs enqueued on this broker inside the block get priority `value` (-100..100, higher
    runs first), unless one asks for its own with `q_options={"priority": n}`. Nests; checked
    on entry (a one-line ValueError)."""
    token = _priority.set(check_priority(value))
    try:
        yield
    finally:
        _priority.reset(token)


# django-q2 1.11's async_task() keeps only the q_options it knows, and hands its broker nothing
# but the signed package: a priority asked for in q_options reaches no broker. So enqueue()
# reads it where it still is, in the q_options of the async_task() call it runs in (its
# caller, or a broker subclass's caller). Tied to django-q2 1.11 (pyproject.toml pins it;
# tests/pgbroker/test_priority.py fails if that call changes).
_ASYNC_TASK = tasks.async_task.__code__
_FRAMES_UP = 5  # requested_priority, enqueue, a subclass's enqueue or two, async_task


def _async_task_options() -> dict[str, Any] | None:
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_FRAMES_UP):
        if frame is None:
            return None
        if frame.f_code is _ASYNC_TASK:
            options = frame.f_locals.get("q_options")
            return options if isinstance(options, dict) else None
        frame = frame.f_back
    return None


def requested_priority() -> int:
    """The priority of the job being enqueued: the `q_options={"priority": n}` of the
    async_task() call it comes from, else the innermost `priority()` block, else 0."""
    options = _async_task_options()
    if options is not None and "priority" in options:
        return check_priority(options["priority"])
    return _priority.get()


class Batch:
    """Packages enqueued inside `batched_enqueue()`, per queue, not yet written."""

    def __init__(self) -> None:
        self.packages: list[tuple[str, str, int]] = []  # queue, package, priority

    def mark(self) -> int:
        return len(self.packages)

    def discard_since(self, mark: int) -> None:
        del self.packages[mark:]

    def write(self) -> int:
        by_queue: dict[str, tuple[list[str], list[int]]] = {}
        for queue, package, prio in self.packages:
            packages, prios = by_queue.setdefault(queue, ([], []))
            packages.append(package)
            prios.append(prio)
        with connections[alias()].cursor() as cur:
            for queue, (packages, prios) in by_queue.items():
                cur.execute("SELECT count(*) FROM pgbroker_enqueue_many(%s, %s, %s)",
                            [queue, packages, prios if any(prios) else None])
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
        prio = requested_priority()
        batch = _batch.get()
        if batch is not None:
            batch.packages.append((self.list_key or Conf.CLUSTER_NAME, task, prio))
            return None
        # No close_old_connections() here (the stock ORM broker's), which would close the
        # caller's other connections in the middle of its transaction (django-q2 #293).
        with connections[alias()].cursor() as cur:
            cur.execute("SELECT pgbroker_enqueue(%s, %s, %s)",
                        [self.list_key or Conf.CLUSTER_NAME, task, prio])
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
