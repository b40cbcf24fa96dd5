"""Recovery: resume the sagas whose coordinator died (their lease ran out), and retry the
stuck ones a person asked for."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Max
from django_q.tasks import async_task

from common import validate
from common.db import db_now
from sagas.coordinator import RUN_SAGA_TASK, SagaError, advance, lease_seconds
from sagas.models import Saga, State

logger = logging.getLogger(__name__)

HELD = "held by another coordinator"
BATCH: dict[str, Any] = {"what": "the batch size", "low": 1, "high": 1000}
NOT_STUCK = "saga {id} is {state}, not stuck: only stuck sagas can be retried"


@dataclass
class RecoveryResult:
    # saga id -> the state it reached, "held by another coordinator", or "failed: <error>"
    advanced: dict[int, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.advanced)


def recover_sagas(*, batch: int = 10,
                  on_advanced: Callable[[int, str], None] | None = None) -> RecoveryResult:
    """Resume every active saga whose lease ran out (its coordinator died, or a compensation
    waits for its retry), `batch` at a time. Each batch is claimed with SKIP LOCKED and a fresh
    lease, so recoverers running at once take disjoint sets. `on_advanced(saga_id, state)` is
    called after each saga (a watchdog's heartbeat)."""
    batch = validate.integer(batch, **BATCH)
    result = RecoveryResult()
    while True:
        now = db_now()
        with transaction.atomic():
            ids = list(
                Saga.objects.select_for_update(skip_locked=True).due(at=now)
                .order_by("lease_until")
                .values_list("pk", flat=True)[:batch]
            )
            Saga.objects.filter(pk__in=ids).update(
                lease_until=now + timedelta(seconds=lease_seconds()))
        for saga_id in ids:
            logger.warning("recovering saga %s", saga_id)
            try:
                result.advanced[saga_id] = str(advance(saga_id=saga_id) or HELD)
            except Exception as e:  # one broken saga must not stop the others' recovery
                logger.exception("recovering saga %s failed; the next pass tries again",
                                 saga_id)
                result.advanced[saga_id] = f"failed: {type(e).__name__}: {e}"
            if on_advanced is not None:
                on_advanced(saga_id, result.advanced[saga_id])
        if len(ids) < batch:
            return result


def any_due() -> bool:
    """Is any active saga past its lease (due for recovery)?"""
    return Saga.objects.due().exists()


def retry_stuck(*, saga: Saga) -> None:
    """Give a stuck saga's compensations a fresh set of attempts, and run it now."""
    with transaction.atomic():
        locked = Saga.objects.select_for_update().get(pk=saga.pk)
        if locked.state != State.STUCK:
            raise SagaError(NOT_STUCK.format(id=saga.pk, state=locked.state))
        last = locked.log.aggregate(m=Max("seq"))["m"] or 0
        Saga.objects.filter(pk=saga.pk).update(
            state=State.COMPENSATING, retry_from_seq=last,
            lease_until=db_now() + timedelta(seconds=lease_seconds()))
        async_task(RUN_SAGA_TASK, saga_id=saga.pk, task_name=f"saga {saga.pk} retry")
