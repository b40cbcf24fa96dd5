"""What the saga execution coordinator does next: a pure function of the saga log.

Garcia-Molina & Salem (1987) and the talk's "Failure recovery" slide:
- Forward: run the steps in order; when all ended, the saga is completed.
- A step that failed aborts the saga: compensate every step that started, in reverse order.
- In doubt (STEP_START with no end: the coordinator died mid-step): an idempotent step is run
  again (forward recovery), a non-idempotent one is compensated (backward recovery).
- Compensations are retried until they succeed; after `max_comp_attempts` tries that failed
  or died, the saga is stuck and needs a person (who may retry it: `since_seq`).
No I/O here: the coordinator reads the log, asks, acts, appends, and asks again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class LogEntry(Protocol):  # read-only: a model's row or a frozen Entry
    @property
    def seq(self) -> int: ...

    @property
    def event(self) -> str: ...

    @property
    def step(self) -> str: ...


class StepSpec(Protocol):  # read-only: a definition's Step is a frozen dataclass
    @property
    def name(self) -> str: ...

    @property
    def idempotent(self) -> bool: ...


@dataclass(frozen=True)
class Entry:
    """A log entry without a database (tests, and anything else that builds logs by hand)."""

    seq: int
    event: str
    step: str = ""


@dataclass(frozen=True)
class RunStep:
    step: str
    recovery: bool = False  # True: the step was in doubt and is idempotent (forward recovery)


@dataclass(frozen=True)
class Complete:
    pass


@dataclass(frozen=True)
class Abort:
    reason: str


@dataclass(frozen=True)
class Compensate:
    step: str
    attempt: int


@dataclass(frozen=True)
class FinishCompensated:
    pass


@dataclass(frozen=True)
class Stuck:
    step: str
    tries: int


@dataclass(frozen=True)
class Done:
    outcome: str  # "completed" or "compensated"


Decision = RunStep | Complete | Abort | Compensate | FinishCompensated | Stuck | Done


class InvalidLog(ValueError):
    pass


def decide(
    log: Sequence[LogEntry],
    steps: Sequence[StepSpec],
    *,
    max_comp_attempts: int,
    max_forward_attempts: int = 3,
    since_seq: int = 0,
) -> Decision:
    if not log or log[0].event != "SAGA_START":
        raise InvalidLog("a saga log starts with SAGA_START")
    names = [s.name for s in steps]
    unknown = {e.step for e in log if e.step and e.step not in names}
    if unknown:
        raise InvalidLog(f"log names steps this saga does not have: {sorted(unknown)}")

    ends = [e for e in log if e.event == "SAGA_END"]
    if ends:
        aborted = any(e.event == "SAGA_ABORT" for e in log)
        return Done("compensated" if aborted else "completed")

    def events(step: str, prefix: str) -> list[LogEntry]:
        return [e for e in log if e.step == step and e.event.startswith(prefix)]

    if not any(e.event == "SAGA_ABORT" for e in log):
        for spec in steps:
            step_events = events(spec.name, "STEP_")
            if not step_events:
                return RunStep(spec.name)
            last = step_events[-1].event
            if last == "STEP_END":
                continue
            if last == "STEP_FAIL":
                return Abort(f"{spec.name} failed")
            # STEP_START and no end: the coordinator died while the step ran (in doubt).
            if not spec.idempotent:
                return Abort(f"{spec.name} was in doubt and is not idempotent: backward recovery")
            starts = sum(1 for e in step_events if e.event == "STEP_START")
            if starts >= max_forward_attempts:
                return Abort(f"{spec.name} was in doubt {starts} times: giving up forward recovery")
            return RunStep(spec.name, recovery=True)
        return Complete()

    started = [s for s in names if events(s, "STEP_START")]
    for step in reversed(started):
        comp = events(step, "COMP_")
        if comp and comp[-1].event == "COMP_END":
            continue
        # Every try starts with COMP_START: one that failed (COMP_FAIL) and one whose
        # coordinator died (no end) both count, so a compensation that crashes its process
        # every time ends stuck too.
        tries = sum(1 for e in comp if e.event == "COMP_START" and e.seq > since_seq)
        if tries >= max_comp_attempts:
            return Stuck(step, tries)
        return Compensate(step, attempt=tries + 1)
    return FinishCompensated()
