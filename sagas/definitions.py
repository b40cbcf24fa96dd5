"""Sagas declared as ordered steps: an action, its compensation, and whether the action may
safely run twice. Non-compensable or non-repeatable work goes last (the talk's rule)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from travel import services as travel

Call = Callable[..., object]  # called with saga_id= and step=


@dataclass(frozen=True)
class Step:
    name: str
    action: Call
    compensation: Call
    idempotent: bool
    # The action for several sagas at once (saga_ids=, step=, scopes=: each saga's fault
    # scope), returning {saga id: its error or None}; None: called one saga at a time.
    action_many: Callable[..., dict[int, Exception | None]] | None = None


@dataclass(frozen=True)
class SagaDefinition:
    kind: str
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


def _service_step(service: str) -> Step:
    return Step(
        name=service,
        action=partial(travel.book, service=service),
        compensation=partial(travel.cancel, service=service),
        idempotent=travel.IDEMPOTENT[service],
        action_many=partial(travel.book_many, service=service),
    )


TRIP = SagaDefinition(
    kind="trip",
    steps=(_service_step("hotel"), _service_step("car"), _service_step("flight")),
)

DEFINITIONS: dict[str, SagaDefinition] = {TRIP.kind: TRIP}
