"""django-q2's schedules, run by the cluster in a thread of its own, one schedule per
transaction, skipping rows another transaction holds.

django-q2's scheduler runs inside the cluster's loop and locks every due schedule row in one
transaction (`select_for_update()`): a transaction that holds one of those rows (an admin
edit, another cluster's slow pass) freezes the whole cluster, and one schedule whose `args`
do not parse rolls back every other. Here a held row is skipped until it is free, a failing
schedule is logged and the others run, and the dispatcher's loop never waits for any of it.

Apps declare the schedules they rely on with `register()` (in `AppConfig.ready()`); each pass
creates any that is missing (deleted by hand, or a database restored without it).
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django import db
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from django_q.brokers import Broker
from django_q.conf import Conf, logger
from django_q.humanhash import humanize
from django_q.models import Schedule
from django_q.tasks import async_task

EVERY = 30.0  # seconds between passes (django-q2's sentinel runs its scheduler as often)
FIRST = 1.0  # the first pass, after the cluster started


@dataclass(frozen=True)
class Declared:
    name: str
    func: str
    schedule_type: str = Schedule.MINUTES
    minutes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_declared: dict[str, Declared] = {}


def register(name: str, func: str, *, schedule_type: str = Schedule.MINUTES,
             minutes: int | None = None, **extra: Any) -> None:
    """Declare a schedule this app relies on: the cluster creates it when it is missing."""
    _declared[name] = Declared(name, func, schedule_type, minutes, extra)


def declared() -> list[Declared]:
    return list(_declared.values())


def ensure_declared() -> list[str]:
    """Create every declared schedule that does not exist (by name); returns their names."""
    made = []
    for d in declared():
        fields = {"func": d.func, "schedule_type": d.schedule_type, "minutes": d.minutes,
                  "repeats": -1, **d.extra}
        # back on its cadence: it runs one period from now, as it would have
        first = Schedule(**fields).calculate_next_run(timezone.now())
        _, created = Schedule.objects.get_or_create(name=d.name,
                                                    defaults={**fields, "next_run": first})
        if created:
            made.append(d.name)
            logger.warning("schedule [%s] was missing: created it again", d.name)
    return made


def _ours() -> Q:
    default = Q(cluster__isnull=True) if Conf.CLUSTER_NAME == Conf.PREFIX else Q(pk__in=[])
    return default | Q(cluster=Conf.CLUSTER_NAME)


def due_ids() -> list[int]:
    """Due schedules (by the database's clock: every host agrees on it), unlocked read."""
    return list(Schedule.objects.exclude(repeats=0).filter(next_run__lt=Now())
                .filter(_ours()).order_by("next_run").values_list("pk", flat=True))


def run_due(*, broker: Broker) -> dict[str, int]:
    """One pass: each due schedule in a transaction of its own; a row another transaction
    holds is skipped (it runs next pass); a failing one is logged and the others go on."""
    counts = {"run": 0, "skipped": 0, "failed": 0}
    for pk in due_ids():
        try:
            with transaction.atomic():
                s = (Schedule.objects.select_for_update(skip_locked=True)
                     .filter(pk=pk, next_run__lt=Now()).exclude(repeats=0).first())
                if s is None:
                    counts["skipped"] += 1
                    continue
                run_one(s, broker=broker)
                counts["run"] += 1
        except Exception as e:
            counts["failed"] += 1
            logger.error("schedule [%s] failed, the others go on: %s: %s", pk,
                         type(e).__name__, str(e).strip().splitlines()[0] if str(e) else "")
    return counts


def _parse(s: Schedule) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """django-q2's reading of a schedule's args and kwargs (Python literals)."""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    if s.kwargs:
        try:
            kwargs = ast.literal_eval(s.kwargs)
        except (SyntaxError, ValueError):
            call = ast.parse(f"f({s.kwargs})", mode="eval").body
            parsed = call.keywords if isinstance(call, ast.Call) else []
            kwargs = {k.arg: ast.literal_eval(k.value) for k in parsed
                      if k.arg is not None}
    if s.args:
        args = ast.literal_eval(s.args)
        if type(args) is not tuple:
            args = (args,)
    return args, kwargs


def run_one(s: Schedule, *, broker: Broker) -> None:
    """Enqueue the schedule's task and move it on, as django-q2's scheduler does."""
    args, kwargs = _parse(s)
    q_options = kwargs.get("q_options", {})
    if s.intended_date_kwarg:
        kwargs[s.intended_date_kwarg] = s.next_run.isoformat()
    if s.hook:
        q_options["hook"] = s.hook
    if s.schedule_type != s.ONCE:
        next_run = s.next_run
        now = timezone.now()
        while True:
            next_run = s.calculate_next_run(next_run)
            if Conf.CATCH_UP or next_run > now:
                break
        s.next_run = next_run
        if s.repeats < -1:
            s.repeats = -1
        if s.repeats > 0:
            s.repeats -= 1
    q_options["cluster"] = s.cluster or q_options.get("cluster",
                                                      q_options.pop("broker_name", None))
    if q_options["cluster"] is None or q_options["cluster"] == Conf.CLUSTER_NAME:
        q_options["broker"] = broker
    q_options["group"] = q_options.get("group", s.name or s.id)
    kwargs["q_options"] = q_options
    s.task = async_task(s.func, *args, **kwargs)
    logger.info("created task %s from schedule [%s]", humanize(s.task) if s.task else None,
                s.name or s.id)
    if s.schedule_type == s.ONCE:
        if s.repeats < 0:
            s.delete()
            return
        s.repeats = 0
    s.save()


class Scheduler(threading.Thread):
    """The cluster's scheduler thread (its own database connection: Django's are per
    thread)."""

    def __init__(self, *, broker: Broker, stopping: Callable[[], bool]) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.broker = broker
        self.stopping = stopping
        self.wake = threading.Event()

    def run(self) -> None:
        self.wake.wait(FIRST)
        while not self.stopping():
            try:
                ensure_declared()
                run_due(broker=self.broker)
            except Exception as e:  # the database is away: the next pass tries again
                logger.warning("the scheduler could not run: %s: %s", type(e).__name__,
                               str(e).strip().splitlines()[0] if str(e) else "")
            finally:
                db.connections.close_all()
            self.wake.wait(EVERY)
