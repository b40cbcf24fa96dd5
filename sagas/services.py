"""Starting sagas: create one with its SAGA_START and enqueue its coordinator, in one
transaction; and wait for one to end. Coordinating is sagas.coordinator, recovering
sagas.recovery."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django_q.tasks import async_task

from common import validate
from common.db import db_now
from dashboard import audit
from faults import services as faults
from sagas import choreography
from sagas.coordinator import RUN_SAGA_TASK, SagaError, append_event, lease_seconds
from sagas.definitions import DEFINITIONS, TRIP
from sagas.models import ACTIVE_STATES, Event, Saga, SagaLog, Style
from sagas.selectors import AUDIT, recheck_findings, settled
from travel.services import MODELS

__all__ = ["SagaError", "start_saga", "start_trip", "wait_for"]

CUSTOMER_MAX = 100
# What a person types, parsed the same way by book_trip, the trip forms and start_trip().
CUSTOMER: dict[str, Any] = {"what": "the customer name", "max_length": CUSTOMER_MAX}
TIMEOUT: dict[str, Any] = {"what": "the timeout", "high": validate.DAY}
UNKNOWN_KIND = "unknown saga kind {kind}"
UNKNOWN_STYLE = "unknown saga style {style}; use one of: {known}"


def start_saga(*, kind: str, payload: dict, fault_plan: dict[str, str] | None = None,
               style: Style | str = Style.ORCHESTRATED) -> Saga:
    """Create the saga and its SAGA_START, and enqueue its coordinator (orchestrated) or
    publish the request its first service reacts to (choreographed), in one transaction.

    `fault_plan` ({point: action}) arms faults for this saga only, once each.
    """
    if not isinstance(kind, str) or kind not in DEFINITIONS:
        raise SagaError(UNKNOWN_KIND.format(kind=validate.shown(kind)))
    style = parse_style(style)
    payload = validate.payload(payload, what="the saga payload")
    scope = f"saga-{uuid.uuid4().hex}" if fault_plan else ""
    # `slow` answers 2 s after the step deadline (still well inside the task's Q_TIMEOUT)
    slow_ms = int((float(settings.SAGA_STEP_DEADLINE_SECONDS) + 2) * 1000)
    for point, action in (fault_plan or {}).items():
        faults.arm(point=point, action=action, times=1, scope=scope, delay_ms=slow_ms)
    with transaction.atomic():
        saga = Saga.objects.create(kind=kind, style=style, payload=payload, fault_scope=scope,
                                   lease_until=db_now() + timedelta(seconds=lease_seconds()))
        append_event(saga, Event.SAGA_START, detail=_describe(payload, fault_plan))
        if style == Style.CHOREOGRAPHED:
            choreography.request(saga)
        else:
            async_task(RUN_SAGA_TASK, saga_id=saga.pk, task_name=f"saga {saga.pk}")
    return saga


def parse_style(style: object) -> Style:
    """A saga style, as a person or a caller may give it; SagaError in one line if not one."""
    if isinstance(style, str) and style in Style.values:
        return Style(style)
    raise SagaError(UNKNOWN_STYLE.format(style=validate.shown(style),
                                         known=", ".join(Style.values)))


def _describe(payload: dict, fault_plan: dict[str, str] | None) -> str:
    text = ", ".join(f"{k}={v}" for k, v in payload.items())
    if fault_plan:
        text += "; faults: " + ", ".join(f"{p} {a}" for p, a in fault_plan.items())
    return text


def start_trip(
    *, customer: str, fail: str | None = None, crash: str | None = None,
    slow: str | None = None, style: Style | str = Style.ORCHESTRATED,
) -> Saga:
    """The talk's trip: book hotel, car, flight for `customer`, orchestrated (a coordinator)
    or choreographed (each service reacting to the one before).

    fail/crash/slow name a service whose booking raises, kills the process booking it (the
    coordinator, or the service's reaction), or answers after the deadline, once, in this
    saga only.
    """
    customer = validate.text(customer, **CUSTOMER)
    style = parse_style(style)
    plan = faults.plan(point="saga.{target}.book", what="service", work="trip",
                       allowed=[s.name for s in TRIP.steps], fail=fail, crash=crash, slow=slow)
    return start_saga(kind=TRIP.kind, payload={"customer": customer}, fault_plan=plan,
                      style=style)


def expect(*, fail: str | None = None, crash: str | None = None,
           slow: str | None = None, style: Style | str = Style.ORCHESTRATED) -> str:
    """What a trip with these faults will go through, in words (book_trip --wait says it
    before it waits)."""
    lease = f"{lease_seconds():g} s"
    deadline = f"{float(settings.SAGA_STEP_DEADLINE_SECONDS):g} s"
    said = []
    if crash:
        recovered = ("run again (forward recovery)" if _idempotent(crash) else
                     "compensated (backward recovery: it is not idempotent)")
        if style == Style.CHOREOGRAPHED:
            said.append(f"the {crash} service's reaction dies right after the {crash} is "
                        "booked; the queue runs the reaction again as soon as it sees the "
                        f"worker die, and the {crash} step is {recovered}")
        else:
            said.append(f"the coordinator dies right after the {crash} is booked; the cluster "
                        "runs it again as soon as it sees the worker die (or recover_sagas "
                        f"does, once its lease of {lease} runs out), and the {crash} step is "
                        + recovered)
    if style == Style.CHOREOGRAPHED and not (fail or crash or slow):
        return ("hotel, car, flight, in that order, each service reacting to the event of the "
                "one before it (the relay carries them)")
    if slow:
        said.append(f"the {slow} answers after its deadline of {deadline}, so it counts as "
                    "failed and the trip is compensated")
    if fail:
        said.append(f"the {fail} booking fails, so the trip is compensated in reverse order")
    return "; ".join(said) if said else "hotel, car, flight, in that order"


def _idempotent(step: str) -> bool:
    return next(s.idempotent for s in TRIP.steps if s.name == step)


# --- advancing --------------------------------------------------------------------------------


def wait_for(*, saga_id: int, timeout: float, poll: float = 0.2,
             on_event: Callable[[SagaLog], None] | None = None,
             on_poll: Callable[[], None] | None = None) -> Saga:
    """Poll until the saga is final or stuck, or the timeout (seconds, above 0, at most a
    day) passes; returns it as it is. `on_event` is called with each log entry as it
    appears, in order, the ones already there first; `on_poll` after every poll."""
    timeout = validate.seconds(timeout, **TIMEOUT)
    poll = validate.seconds(poll, what="the poll interval", high=60)
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        saga = Saga.objects.get(pk=saga_id)
        if on_event is not None:
            for entry in saga.log.filter(seq__gt=seen).order_by("seq"):
                seen = entry.seq
                on_event(entry)
        if saga.state not in ACTIVE_STATES or time.monotonic() > deadline:
            return saga
        if on_poll is not None:
            on_poll()
        time.sleep(min(poll, max(0.0, deadline - time.monotonic()) + 0.01))


def audit_sagas() -> str:
    """The audit's pass (every minute): move its watermark over the sagas that settled, keep
    the ones not ok (or not ended) as findings, forget those ok since (dashboard.audit)."""
    moved = audit.advance(AUDIT, settled=settled)
    forgotten = audit.forget(AUDIT, recheck_findings())
    return f"audit of sagas: moved {moved} ids, {forgotten} finding(s) ok now"


def prune_finished_sagas(cutoff, batch: int) -> int:
    """One transaction (retention): up to `batch` sagas that ended before `cutoff`, with their
    log and bookings; only sagas the audit has judged, never one of its findings."""
    batch = max(1, batch // 10)  # a saga is a dozen rows
    with transaction.atomic():
        ids = list(Saga.objects.finished().filter(updated_at__lt=cutoff,
                                                  pk__lte=audit.position(AUDIT))
                   .exclude(pk__in=audit.findings(AUDIT)).order_by("updated_at")
                   .values_list("pk", flat=True)[:batch])
        for model in MODELS.values():
            model.objects.filter(saga_id__in=ids).delete()
        SagaLog.objects.filter(saga_id__in=ids).delete()
        Saga.objects.filter(pk__in=ids).delete()
    return len(ids)
