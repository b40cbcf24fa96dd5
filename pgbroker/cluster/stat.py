"""django-q2's view of a running cluster (`Stat.get_all()`, `manage.py qinfo`, `qmonitor`):
the `Stat` its sentinel saves to the broker's cache every turn, saved here by the dispatcher
from what it knows. django-q2 builds a Stat from its Sentinel object; `SentinelView` is that
object's shape, filled with this cluster's processes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from django_q.brokers import Broker
from django_q.conf import Conf, logger
from django_q.signing import SignedPackage
from django_q.status import Stat

from pgbroker.connection import host_name

STAT_EVERY = 1.0  # django-q2's Stat lives 3 s in the cache unless saved again


@dataclass
class Pid:
    pid: int | None


@dataclass
class Size:
    n: int = 0

    def qsize(self) -> int:
        return self.n


@dataclass
class SentinelView:
    """What django_q.status.Stat reads from django-q2's Sentinel."""

    broker: Broker
    cluster_id: str
    parent_pid: int  # the qcluster process, as django-q2 reports its clusters
    workers: list[int | None]
    working: bool
    stopping: bool
    buffered: int = 0  # jobs claimed or dequeued, in no worker's pipe yet
    tob: datetime = field(default_factory=timezone.now)
    pid: int = field(default_factory=os.getpid)  # the dispatcher is the sentinel here
    reincarnations: int = 0
    monitor: Pid | None = None
    pusher: Pid | None = None

    @property
    def task_queue(self) -> Size:
        return Size(self.buffered)

    @property
    def result_queue(self) -> Size:
        return Size(0)  # results go to the flusher as they come

    @property
    def pool(self) -> list[Pid]:
        return [Pid(pid) for pid in self.workers]

    def status(self) -> str:
        if self.stopping:
            return str(Conf.STOPPING)
        return str(Conf.WORKING if self.working else Conf.IDLE)


def save_stat(view: SentinelView) -> None:
    """Save the cluster's Stat (a no-op without a cache shared by the processes, as in
    django-q2: Q_CLUSTER's `cache`, or the broker's own store for Redis)."""
    stat: Any = Stat(view)
    stat.host = host_name()
    stat.monitor = stat.pusher = view.pid  # one process is pusher, monitor and sentinel
    try:
        view.broker.set_stat(stat.key, SignedPackage.dumps(stat, True), 3)
    except Exception as e:  # the cache (Redis) is down: the stat expires, which says so
        logger.debug("could not save the cluster's Stat: %s", e)

