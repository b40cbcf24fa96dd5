"""Starting sagas: create one with its SAGA_START and enqueue its coordinator, in one
transaction; and wait for one to end. Coordinating is sagas.coordinator, recovering
sagas.recovery."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from faults import services as faults
from sagas.coordinator import RUN_SAGA_TASK, SagaError, append_event, lease_seconds
from sagas.definitions import DEFINITIONS, TRIP
from sagas.models import ACTIVE_STATES, Event, Saga

__all__ = ["SagaError", "start_saga", "start_trip", "wait_for"]

CUSTOMER_EMPTY = "the customer name is empty"
CUSTOMER_TOO_LONG = "the customer name is longer than 100 characters"
UNKNOWN_KIND = "unknown saga kind {kind!r}"


def start_saga(*, kind: str, payload: dict, fault_plan: dict[str, str] | None = None) -> Saga:
    """Create the saga and its SAGA_START, and enqueue its coordinator, in one transaction.

    `fault_plan` ({point: action}) arms faults for this saga only, once each.
    """
    if kind not in DEFINITIONS:
        raise SagaError(UNKNOWN_KIND.format(kind=kind))
    scope = f"saga-{uuid.uuid4().hex}" if fault_plan else ""
    # `slow` answers 2 s after the step deadline (still well inside the task's Q_TIMEOUT)
    slow_ms = int((float(settings.SAGA_STEP_DEADLINE_SECONDS) + 2) * 1000)
    for point, action in (fault_plan or {}).items():
        faults.arm(point=point, action=action, times=1, scope=scope, delay_ms=slow_ms)
    with transaction.atomic():
        saga = Saga.objects.create(kind=kind, payload=payload, fault_scope=scope,
                                   lease_until=timezone.now() + timedelta(seconds=lease_seconds()))
        append_event(saga, Event.SAGA_START, detail=_describe(payload, fault_plan))
        async_task(RUN_SAGA_TASK, saga_id=saga.pk, task_name=f"saga {saga.pk}")
    return saga


def _describe(payload: dict, fault_plan: dict[str, str] | None) -> str:
    text = ", ".join(f"{k}={v}" for k, v in payload.items())
    if fault_plan:
        text += "; faults: " + ", ".join(f"{p} {a}" for p, a in fault_plan.items())
    return text


def start_trip(
    *, customer: str, fail: str | None = None, crash: str | None = None,
    slow: str | None = None,
) -> Saga:
    """The talk's trip: book hotel, car, flight for `customer`.

    fail/crash/slow name a service whose booking raises, kills the coordinator, or answers
    after the deadline, once, in this saga only.
    """
    customer = (customer or "").strip()
    if not customer:
        raise SagaError(CUSTOMER_EMPTY)
    if len(customer) > 100:
        raise SagaError(CUSTOMER_TOO_LONG)
    plan = faults.plan(point="saga.{target}.book", what="service",
                       allowed=[s.name for s in TRIP.steps], fail=fail, crash=crash, slow=slow)
    return start_saga(kind=TRIP.kind, payload={"customer": customer}, fault_plan=plan)


# --- advancing --------------------------------------------------------------------------------


def wait_for(*, saga_id: int, timeout: float, poll: float = 0.2) -> Saga:
    """Poll until the saga is final or stuck, or the timeout passes; returns it as it is."""
    deadline = time.monotonic() + timeout
    while True:
        saga = Saga.objects.get(pk=saga_id)
        if saga.state not in ACTIVE_STATES or time.monotonic() > deadline:
            return saga
        time.sleep(poll)
