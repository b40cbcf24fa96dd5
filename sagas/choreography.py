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
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import OperationError
from outbox import topics
from outbox.services import publish
from sagas import decide as d
from sagas.batch import Track, Work, decide, drive, hold_many
from sagas.coordinator import Driving, bookkeeping, describe_error, work_of
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
                kwargs=_kwargs(sub.service), save=False,  # the saga log says what it did
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
    said = react_many(calls=[{"saga_id": saga_id, "service": service}])[0]
    if isinstance(said, Exception):
        raise said
    return said


def react_many(*, calls: Sequence[dict]) -> list[str | Exception]:
    """Several reactions at once ({"saga_id", "service"} each), sharing their commits
    (sagas.batch): for each, what happened in words, or the error that stopped it (Retry: a
    cancellation failed and the queue runs the reaction again). Two reactions to one saga
    run one after the other, each with its own reading of the log."""
    said: list[str | Exception | None] = [None] * len(calls)
    left = list(enumerate(calls))
    while left:  # one reaction per saga in each pass
        seen: set[int] = set()
        this: list[tuple[int, dict]] = []
        later: list[tuple[int, dict]] = []
        for n, call in left:
            (later if call["saga_id"] in seen else this).append((n, call))
            seen.add(call["saga_id"])
        for n, outcome in zip([n for n, _ in this], _react_once([c for _, c in this]),
                              strict=True):
            said[n] = outcome
        left = later
    return said  # type: ignore[return-value]


def _react_once(calls: list[dict]) -> list[str | Exception]:
    """One reaction per saga, together."""
    with hold_many([c["saga_id"] for c in calls], wait=True) as holding:
        tracks: dict[int, Track] = {}
        refused: dict[int, Exception] = {}
        for c in calls:
            held = holding.held.get(c["saga_id"])
            if held is None:
                continue  # no such saga
            if held.saga.style != Style.CHOREOGRAPHED:
                refused[c["saga_id"]] = OperationError(NOT_CHOREOGRAPHED.format(
                    id=held.saga.pk, style=held.saga.style))
                continue
            tracks[held.saga.pk] = Track(held.saga, held.log, epoch=(held.saga.epoch,) * 2,
                                         lease=0, service=c["service"])
        drive(list(tracks.values()), Reacting())
        for t in tracks.values():
            if t.stuck:
                Saga.objects.filter(pk=t.saga.pk).update(state=State.STUCK)
    outcomes: list[str | Exception] = []
    for c in calls:
        i = c["saga_id"]
        if i in holding.missing:
            outcomes.append(Saga.DoesNotExist(f"no saga {i}"))
        elif i in refused:
            outcomes.append(refused[i])
        else:
            outcomes.append(tracks[i].outcome)  # type: ignore[arg-type]
    return outcomes


class Reacting(Driving):
    """A choreographed service's Driver: its own step it books or cancels; another service's
    turn it hands over to, with the event of what it did last (published with its closing log
    events, in one transaction); the saga's ending it records."""

    def next_work(self, t: Track) -> Work | None:
        definition = DEFINITIONS[t.saga.kind]
        while True:
            decision = decide(t, definition)
            if bookkeeping(t, decision):
                continue
            match decision:
                case d.Done(_):
                    t.outcome = _said(t) or f"nothing to do: saga {t.saga.pk} has ended"
                    return None
                case d.RunStep(step) | d.Compensate(step) if step == t.service:
                    return work_of(decision, definition)
                case d.RunStep(step) | d.Compensate(step):  # another service's turn
                    t.outcome = _hand_over(t, step)
                    return None
                case d.Stuck(step, tries):
                    self.stuck(t, step, tries, f"saga {t.saga.pk} is stuck")
                    return None
            raise AssertionError(decision)

    def retry_later(self, t: Track, step: str, e: Exception, attempt: int) -> None:
        t.add(Event.COMP_FAIL, step=step,
              detail=f"{describe_error(e)}; the queue runs this reaction again")
        t.outcome = Retry(f"cancelling {step} of saga {t.saga.pk} failed (attempt {attempt}): "
                          f"{describe_error(e)}")


def _hand_over(t: Track, next_step: str) -> str:
    """The event of what this service did last, published with its closing log events;
    nothing when it did nothing (the event was a duplicate, or not for it yet)."""
    if not t.did:
        return f"nothing to do for {t.service}: it is {next_step}'s turn (saga {t.saga.pk})"
    last = t.log[-1]
    what = BOOKED if last.event == Event.STEP_END else CANCELLED
    t.publish = f"{last.step}.{what}"
    return f"{_said(t)}; published {t.publish} for {next_step}"


def _said(t: Track) -> str:
    return f"{t.service}: " + ", ".join(t.did) if t.did else ""
