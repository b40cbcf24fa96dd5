"""Reads for the saga admin, commands and dashboard."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count
from django.utils import timezone

from sagas.models import Saga, State
from travel.models import FlightBooking
from travel.services import MODELS, booking_states


def _iso(when) -> str | None:
    return None if when is None else timezone.localtime(when).isoformat(timespec="milliseconds")


def saga_as_dict(saga: Saga) -> dict:
    """The stable `show_saga --json` shape: everything the text output shows (and what it
    is computed from). Each log entry's `elapsed` is seconds since the saga started (its
    SAGA_START); `at` and the saga's times are ISO 8601 with milliseconds, local time."""
    log = list(saga.log.order_by("seq"))
    start = log[0].at if log else saga.created_at
    return {
        "id": saga.pk,
        "kind": saga.kind,
        "state": saga.state,
        "customer": (saga.payload or {}).get("customer", "") if isinstance(saga.payload, dict)
        else "",
        "payload": saga.payload,
        "created_at": _iso(saga.created_at),
        "updated_at": _iso(saga.updated_at),
        "lease_until": _iso(saga.lease_until),
        "log": [{"seq": e.seq, "event": e.event, "step": e.step, "detail": e.detail,
                 "pid": e.pid, "at": _iso(e.at),
                 "elapsed": round((e.at - start).total_seconds(), 3)}
                for e in log],
        "bookings": booking_states(saga_id=saga.pk),
    }


def saga_counts() -> dict[str, int]:
    counts = dict(Saga.objects.values_list("state").annotate(n=Count("id")))
    return {state: counts.get(state, 0) for state in State.values}


def overdue_sagas(grace_seconds: float = 5) -> list[int]:
    """Unfinished sagas whose lease ran out more than `grace_seconds` ago."""
    cutoff = timezone.now() - timedelta(seconds=grace_seconds)
    return list(Saga.objects.due(at=cutoff).values_list("id", flat=True))


def recent_sagas(limit: int = 10) -> list[Saga]:
    return list(Saga.objects.order_by("-id")[:limit])


def booking_violations() -> tuple[list[int], list[int]]:
    """(compensated sagas with a booking still active, completed sagas missing a booking)."""
    booked: dict[int, set[str]] = {}
    for service, model in MODELS.items():
        for saga_id in model.objects.booked().values_list("saga_id", flat=True):
            booked.setdefault(saga_id, set()).add(service)
    compensated = Saga.objects.filter(state=State.COMPENSATED).values_list("id", flat=True)
    completed = Saga.objects.filter(state=State.COMPLETED).values_list("id", flat=True)
    active_after_compensation = [i for i in compensated if booked.get(i)]
    incomplete = [i for i in completed if booked.get(i, set()) != set(MODELS)]
    return active_after_compensation, incomplete


def flights_booked_twice() -> list[int]:
    """Sagas whose flight (not idempotent) was booked more than once."""
    return list(FlightBooking.objects.filter(times_booked__gt=1)
                .values_list("saga_id", flat=True))
