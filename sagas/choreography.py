"""The talk's other saga: choreography. No coordinator: each service reacts to the event of the
one before it, and its reaction and its outgoing event commit in one transaction (an outbox
message: the relay turns it into the next service's job).

    trip.requested -> hotel books -> hotel.booked -> car books -> car.booked -> flight books
    (the flight's STEP_END commits with SAGA_END: completed)

A failure makes the services that booked cancel, in reverse order, each reacting to the event
before it: the failing service records its failure and the abort, cancels its own step, and
publishes `<step>.cancelled`; the service before it cancels on that event, and so on; the first
one ends the saga (compensated).

The rules are the orchestrator's, applied by each service to the same saga log (sagas.decide):
Ti at most once (STEP_START commits before the call), Ci at least once (a failed cancellation
is retried by the queue, with backoff, until the saga is stuck), non-compensable work last,
and a reaction that died mid-way (its job is run again by the queue) decides per step:
an idempotent booking runs again (forward recovery), the flight is compensated (backward).
A reaction is idempotent by (saga, step): an event delivered twice finds its work in the log
and does nothing. Reactions of one saga never run at once (the saga's advisory lock, waited
for). A saga's state follows from its events, as an orchestrated one's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from common.errors import OperationError
from outbox import topics
from outbox.services import publish
from sagas import decide as d
from sagas.coordinator import GIVING_UP, Held, LogWriter, call_step, describe_error, hold
from sagas.definitions import DEFINITIONS, SagaDefinition
from sagas.models import Event, Saga, State, Style

logger = logging.getLogger(__name__)

REACT_TASK = "sagas.tasks.react"
REQUESTED = "requested"  # <kind>.requested: the customer asks; the first service reacts
BOOKED = "booked"
CANCELLED = "cancelled"
NOT_CHOREOGRAPHED = "saga {id} is {style}, not choreographed"


class Retry(OperationError):
    """A cancellation failed: the reaction's job fails so that the queue runs it again (with
    its backoff); the saga waits, compensating."""


@dataclass(frozen=True)
class Subscription:
    """An event and the service that reacts to it."""

    topic: str
    service: str


def subscriptions(definition: SagaDefinition) -> list[Subscription]:
    """Who reacts to what: the first service to the request; each next service to the one
    before it booking; each service before another to that one cancelling."""
    names = [s.name for s in definition.steps]
    subs = [Subscription(f"{definition.kind}.{REQUESTED}", names[0])]
    subs += [Subscription(f"{a}.{BOOKED}", b) for a, b in zip(names, names[1:], strict=False)]
    subs += [Subscription(f"{b}.{CANCELLED}", a) for a, b in zip(names, names[1:], strict=False)]
    return subs


def register_topics() -> None:
    """One outbox topic per event, each becoming a job of the service that reacts to it, on
    the PostgreSQL queue (enqueued in the relay's transaction)."""
    from jobs.queues import Store

    for definition in DEFINITIONS.values():
        for sub in subscriptions(definition):
            topics.register(topics.Topic(
                name=sub.topic, task=REACT_TASK, store=Store.POSTGRES,
                kwargs=_kwargs(sub.service),
                description=f"choreographed {definition.kind} saga: the {sub.service} "
                            "service reacts"))


def _kwargs(service: str):
    def kwargs(payload: dict) -> dict:
        saga_id = payload.get("saga_id") if isinstance(payload, dict) else None
        if not isinstance(saga_id, int) or isinstance(saga_id, bool):
            raise topics.PermanentError(f"no saga id in {payload!r}")
        return {"saga_id": saga_id, "service": service}
    return kwargs


def request(saga: Saga) -> None:
    """Inside start_saga's transaction: the event the first service reacts to."""
    publish(topic=f"{saga.kind}.{REQUESTED}", payload={"saga_id": saga.pk})


def react(*, saga_id: int, service: str) -> str:
    """`service` reacts to the event addressed to it: it does what the saga log says is its
    to do now (nothing if its work is already in the log: a duplicate), and hands over with
    the event of what it did. Returns what happened, in words."""
    with hold(saga_id, wait=True) as held:
        assert held is not None  # waited for
        if held.saga.style != Style.CHOREOGRAPHED:
            raise OperationError(NOT_CHOREOGRAPHED.format(id=saga_id, style=held.saga.style))
        return _Reaction(held, service).run()


class _Reaction:
    def __init__(self, held: Held, service: str) -> None:
        self.saga, self.service = held.saga, service
        self.definition: SagaDefinition = DEFINITIONS[held.saga.kind]
        self.writer = LogWriter(held.saga, held.log, takes_over=False)
        self.log = self.writer.log
        self.did: list[str] = []

    def run(self) -> str:
        while True:
            decision = d.decide(
                self.log, self.definition.steps,
                max_comp_attempts=settings.SAGA_MAX_COMP_ATTEMPTS,
                max_forward_attempts=settings.SAGA_MAX_FORWARD_ATTEMPTS,
                since_seq=self.saga.retry_from_seq)
            match decision:
                case d.Done(_):
                    self._flush()
                    return self._said() or f"nothing to do: saga {self.saga.pk} has ended"
                case d.RunStep(step, recovery) if step == self.service:
                    self._book(step, recovery)
                case d.Compensate(step, attempt) if step == self.service:
                    self._cancel(step, attempt)
                case d.RunStep(step) | d.Compensate(step):  # another service's turn
                    return self._hand_over(step)
                case d.Complete():
                    self._append(Event.SAGA_END, detail="completed", state=State.COMPLETED)
                case d.Abort(reason):
                    self._append(Event.SAGA_ABORT, detail=reason, state=State.COMPENSATING)
                case d.FinishCompensated():
                    self._append(Event.SAGA_END, detail="compensated", state=State.COMPENSATED)
                case d.Stuck(step, tries):
                    self._flush()
                    Saga.objects.filter(pk=self.saga.pk).update(state=State.STUCK)
                    logger.error("saga %s is stuck: compensating %s failed %s times",
                                 self.saga.pk, step, tries)
                    return f"saga {self.saga.pk} is stuck"

    # --- what a service does ----------------------------------------------------------------

    def _book(self, step: str, recovery: bool) -> None:
        self._append(Event.STEP_START, step=step,
                     detail="forward recovery: in doubt, idempotent, run again" if recovery
                     else "")
        try:
            call_step(self.definition.step(step).action, self.saga, step,
                       deadline=float(settings.SAGA_STEP_DEADLINE_SECONDS))
        except Exception as e:
            self._append(Event.STEP_FAIL, step=step, detail=describe_error(e))
        else:
            self._append(Event.STEP_END, step=step)

    def _cancel(self, step: str, attempt: int) -> None:
        self._append(Event.COMP_START, step=step, detail=f"attempt {attempt}")
        try:
            call_step(self.definition.step(step).compensation, self.saga, step, deadline=None)
        except Exception as e:
            if attempt >= settings.SAGA_MAX_COMP_ATTEMPTS:
                self._append(Event.COMP_FAIL, step=step,
                             detail=f"{describe_error(e)}; {GIVING_UP.format(tries=attempt)}")
                return  # the next decision is Stuck
            self._append(Event.COMP_FAIL, step=step,
                         detail=f"{describe_error(e)}; the queue runs this reaction again")
            self._flush()
            raise Retry(f"cancelling {step} of saga {self.saga.pk} failed (attempt "
                        f"{attempt}): {describe_error(e)}") from e
        self._append(Event.COMP_END, step=step)

    def _hand_over(self, next_step: str) -> str:
        """The event of what this service did last, committed with its closing log event;
        nothing when it did nothing (the event was a duplicate, or not for it yet)."""
        if not self.did:
            self._flush()
            return (f"nothing to do for {self.service}: it is {next_step}'s turn "
                    f"(saga {self.saga.pk})")
        last = self.log[-1]
        what = BOOKED if last.event == Event.STEP_END else CANCELLED
        topic = f"{last.step}.{what}"
        with transaction.atomic():
            self._flush()
            publish(topic=topic, payload={"saga_id": self.saga.pk})
        return f"{self._said()}; published {topic} for {next_step}"

    # --- the log --------------------------------------------------------------------------

    def _append(self, event: str, *, step: str = "", detail: str = "",
                state: str | None = None) -> None:
        self.writer.append(event, step=step, detail=detail, state=state)
        self.did.append(f"{event} {step}".strip())

    def _flush(self) -> None:
        self.writer.flush()

    def _said(self) -> str:
        return f"{self.service}: " + ", ".join(self.did) if self.did else ""
