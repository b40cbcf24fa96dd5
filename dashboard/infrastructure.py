"""What the infrastructure apps (outbox, jobs and the queues, Redis, faults, retention) show
on the dashboard: registered by DashboardConfig.ready, like any other app's (users/dashboard.py).
They sit below the dashboard (tests/test_architecture.py) and know nothing of it. The faults'
panel and controls (arm a fault point, break Redis) only while the faults app is installed
(FAULTS_ENABLED, project/settings.py)."""

from __future__ import annotations

from dataclasses import asdict

from django.apps import apps
from django.contrib import messages

from dashboard import registry, tallies
from dashboard.forms import FaultForm, RedisForm
from dashboard.registry import Check, Snapshot, Status
from faults import services as faults
from faults import stores
from faults.selectors import armed_faults
from jobs.cluster import run_now
from jobs.models import JobRun
from jobs.selectors import parked_tasks, queue_counts, redis_status
from outbox.models import PUBLISHED_TALLY, OutboxMessage
from outbox.selectors import outbox_counts
from retention.selectors import sizes


def infrastructure_checks(snap: Snapshot) -> list[Check]:
    return [
        Check.of("outbox_dead", "outbox: dead messages (kept with their error, retryable)",
                 [str(i) for i in OutboxMessage.objects.dead().values_list("id", flat=True)],
                 Status.ATTENTION),
        Check.of("jobs_parked", "jobs parked after too many attempts (poison jobs)",
                 list(JobRun.objects.parked().values_list("key", flat=True)),
                 Status.ATTENTION),
        Check.of("queue_parked", "jobs the queue gave up on (retry them from the Jobs page)",
                 [f"{t.id} {t.func}" for t in parked_tasks()],
                 Status.ATTENTION),
    ]


def arm_fault(data: dict) -> tuple[int, str]:
    point, action = data["point"], data["action"]
    if action == "disarm":
        was = faults.disarm(point=point)
        return messages.SUCCESS, f"Disarmed {point}." if was else f"{point} was not armed."
    times = data["times"]
    faults.arm(point=point, action=action, times=times,
               delay_ms=faults.DEFAULT_DELAY_MS if data["ms"] is None else data["ms"])
    return messages.WARNING, (f"Armed {point}: {action}, "
                              f"{'every time' if times is None else f'{times} time(s)'}.")


def break_redis(data: dict) -> tuple[int, str]:
    return messages.WARNING, stores.act(action=data["action"]) + "."


def outbox(snap: Snapshot) -> dict:
    """The outbox's counts, and every message ever published (its tally: pruned or not)."""
    return {"outbox": {**asdict(outbox_counts()), "published": published_ever()}}


def published_ever() -> int:
    return tallies.totals(PUBLISHED_TALLY).get(PUBLISHED_TALLY, 0)


def invariants(snap: Snapshot) -> dict:
    found = snap.get("checks", lambda: registry.checks(snap))
    return {"checks": found, "violations": registry.violations(found)}


def register() -> None:
    registry.register_checks("infrastructure", infrastructure_checks, order=20)
    for panel in [
        registry.Panel("invariants", "admin/dashboard/invariants.html", invariants,
                       order=20, wide=True),
        registry.Panel("outbox", "admin/dashboard/outbox.html", outbox, order=30),
        registry.Panel("queue", "admin/dashboard/queue.html",
                       lambda snap: {"queue": queue_counts()}, order=40),
        registry.Panel("redis", "admin/dashboard/redis.html",
                       lambda snap: {"redis": redis_status()}, order=50),
        # retention's History panel: each table that grows with traffic, its size, oldest
        # row, window and last prune
        registry.Panel("history", "admin/retention/dashboard_history.html",
                       lambda snap: {"tables": sizes()}, order=95, wide=True),
    ]:
        registry.register_panel(panel)
    registry.register_control(
        registry.Control("relay", "", lambda data: run_now("outbox.tasks.relay_outbox",
                                                           "Relayed the outbox"),
                         button="Relay the outbox now", order=70))
    registry.register_control(registry.Control(
        name="prune", title="", button="Prune now", order=90,
        help="delete what is older than its window (settings RETENTION_DAYS), in small "
             "batches; the schedule does it every 10 minutes",
        run=lambda data: run_now("retention.tasks.prune", "Pruned")))
    if apps.is_installed("faults"):
        register_faults()


def register_faults() -> None:
    registry.register_panel(
        registry.Panel("faults", "admin/dashboard/faults.html",
                       lambda snap: {"faults": armed_faults()}, order=70))
    for control in [
        registry.Control("fault", "Arm a fault point", arm_fault, form=FaultForm,
                         button="Arm / disarm", order=20,
                         initial=lambda: {"point": "signup.part2", "action": "raise",
                                          "times": 3}),
        registry.Control("redis", "Break Redis", break_redis, form=RedisForm, order=40,
                         initial=lambda: {"action": stores.Action.STOP}),
    ]:
        registry.register_control(control)
