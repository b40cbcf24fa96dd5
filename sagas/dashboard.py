"""What the sagas app brings to the dashboard: the saga panels, the booking invariants, and
the trip and recover controls (registered by SagasConfig.ready)."""

from __future__ import annotations

from django.contrib import messages

from dashboard import registry
from dashboard.registry import Check, Snapshot, Status
from jobs.cluster import run_now
from sagas import selectors, services
from sagas.forms import StartTripForm
from sagas.models import Saga, State, Style


def saga_checks(snap: Snapshot) -> list[Check]:
    found = selectors.booking_violations()
    Verdict = selectors.Verdict
    return [
        Check.of("saga_compensated_but_booked", "compensated sagas must leave nothing booked",
                 found.get(Verdict.COMPENSATED_BUT_BOOKED, []), Status.VIOLATION),
        Check.of("saga_completed_but_not_booked", "completed sagas have every step booked",
                 found.get(Verdict.COMPLETED_NOT_BOOKED, []), Status.VIOLATION),
        Check.of("flights_booked_twice",
                 "a flight is booked at most once (the flight service is not idempotent)",
                 found.get(Verdict.FLIGHT_BOOKED_TWICE, []), Status.VIOLATION),
        Check.of("saga_stuck", "sagas whose compensation keeps failing (retry them)",
                 list(Saga.objects.filter(state=State.STUCK).values_list("id", flat=True)),
                 Status.ATTENTION),
        Check.of("saga_overdue",
                 "unfinished sagas past their lease (recovery will resume them)",
                 selectors.overdue_sagas(), Status.ATTENTION),
    ]


def start_trip(data: dict) -> tuple[int, str]:
    saga = services.start_trip(customer=data["customer"], fail=data["fail"] or None,
                               crash=data["crash"] or None,
                               style=data.get("style") or Style.ORCHESTRATED)
    return messages.SUCCESS, f"Trip saga {saga.pk} started ({saga.style})."


def register() -> None:
    registry.register_checks("sagas", saga_checks, order=30)
    registry.register_panel(registry.Panel(
        name="sagas", template="admin/sagas/dashboard_sagas.html", order=60,
        context=lambda snap: {"sagas": selectors.saga_counts(), "stuck": State.STUCK}))
    registry.register_panel(registry.Panel(
        name="recent-sagas", template="admin/sagas/dashboard_recent.html", wide=True, order=90,
        context=lambda snap: {"recent_sagas": selectors.recent_sagas()}))
    registry.register_control(registry.Control(
        name="trip", title="Start a trip saga", run=start_trip, form=StartTripForm,
        button="Book the trip", order=30,
        initial=lambda: {"customer": "alice", "fail": "", "crash": "",
                         "style": Style.ORCHESTRATED}))  # a trip that works
    registry.register_control(registry.Control(
        name="recover", title="", button="Recover sagas now", order=80,
        run=lambda data: run_now("sagas.tasks.recover_sagas", "Saga recovery")))
