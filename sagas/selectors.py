"""Reads for the saga admin, commands and dashboard."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Q
from django.utils import timezone

from common.db import snapshot
from dashboard import audit
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
        "style": saga.style,
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


class Verdict:
    OK = "ok"
    COMPENSATED_BUT_BOOKED = "compensated but booked"
    COMPLETED_NOT_BOOKED = "completed, not booked"
    FLIGHT_BOOKED_TWICE = "flight booked twice"
    UNFINISHED = "unfinished"  # running, compensating or stuck: looked at again


AUDIT = "sagas.bookings"


def judge(sagas) -> dict[int, str]:
    """The verdict on each saga of `sagas` (a queryset), in the caller's snapshot: its state
    and its bookings agree, its flight was booked once."""
    states = dict(sagas.values_list("id", "state"))
    ids = list(states)
    booked: dict[int, set[str]] = {}
    for service, model in MODELS.items():
        for saga_id in model.objects.booked().filter(saga_id__in=ids).values_list(
                "saga_id", flat=True):
            booked.setdefault(saga_id, set()).add(service)
    twice = set(FlightBooking.objects.filter(saga_id__in=ids, times_booked__gt=1)
                .values_list("saga_id", flat=True))
    verdicts = {}
    for i, state in states.items():
        if i in twice:
            verdicts[i] = Verdict.FLIGHT_BOOKED_TWICE
        elif state == State.COMPENSATED and booked.get(i):
            verdicts[i] = Verdict.COMPENSATED_BUT_BOOKED
        elif state == State.COMPLETED and booked.get(i, set()) != set(MODELS):
            verdicts[i] = Verdict.COMPLETED_NOT_BOOKED
        elif state not in (State.COMPLETED, State.COMPENSATED):
            verdicts[i] = Verdict.UNFINISHED
        else:
            verdicts[i] = Verdict.OK
    return verdicts


def judge_now(sagas) -> dict[int, str]:
    with snapshot():
        return judge(sagas)


def live_sagas():
    """The sagas a look judges: ahead of the audit's watermark, and its findings."""
    return Saga.objects.filter(Q(pk__gt=audit.position(AUDIT))
                               | Q(pk__in=audit.findings(AUDIT)))


def settled(after: int, limit: int) -> tuple[dict[int, str], int]:
    """The audit's step: judge the next `limit` sagas created long enough ago; the ones not
    ok (unfinished included: looked at again until they end) and the last id judged."""
    last = audit.last_settled(Saga.objects.all(), after=after, limit=limit, born="created_at")
    if last == after:
        return {}, after
    verdicts = judge_now(Saga.objects.filter(pk__gt=after, pk__lte=last))
    return {i: v for i, v in verdicts.items() if v != Verdict.OK}, last


def recheck_findings() -> list[int]:
    """The audit's findings that are ok now (a saga that ended well)."""
    return [i for i, v in judge_now(Saga.objects.filter(pk__in=audit.findings(AUDIT))).items()
            if v == Verdict.OK]


def booking_violations() -> dict[str, list[int]]:
    """Per verdict, the sagas a look finds not ok (of the live ones: dashboard.audit)."""
    found: dict[str, list[int]] = {}
    for i, v in sorted(judge_now(live_sagas()).items()):
        found.setdefault(v, []).append(i)
    return found
