"""The saga execution coordinator (SEC): advance sagas by their logs.

Every log event is committed before what it announces happens, so the log tells what may
have happened: a `STEP_START` commits before the step runs, a `COMP_START` before the
compensation. Every other event waits, and commits with the next event that opens work (one
commit fewer per step, and nothing happens between the two). What to do next is decided from
the log alone (sagas.decide). A coordinator advances a batch of sagas at once, sharing those
commits between them (sagas.batch); a batch of one is a single saga.

Two coordinators never advance one saga at once: advancing holds a PostgreSQL advisory lock on
a separate session, which the server releases by itself when a coordinator dies. The lease
(`Saga.lease_until`) is how a dead coordinator is noticed: every event extends it, and
`recover_sagas` resumes non-final sagas whose lease ran out.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import cast

from django.conf import settings
from django.db import connection

from faults import services as faults
from faults.points import POINTS
from pgbroker import history
from sagas import decide as d
from sagas.batch import (
    Append,
    Held,
    Pending,
    SagaError,
    Track,
    Work,
    append_many,
    decide,
    drive,
    hold_many,
    refused_reason,
)
from sagas.definitions import DEFINITIONS, SagaDefinition
from sagas.models import Event, Saga, State

logger = logging.getLogger(__name__)

RUN_SAGA_TASK = "sagas.tasks.run_saga"
ADVANCE_IN_TRANSACTION = "advance() must not run inside a transaction: each event commits"
GIVING_UP = ("attempt {tries}, the last: no retry, the saga is stuck until a person retries it "
             "(admin: Sagas > Retry selected stuck sagas)")
class StepTimeout(Exception):
    """The service did not answer within the step's deadline."""


def lease_seconds() -> float:
    return float(settings.SAGA_LEASE_SECONDS)


@contextlib.contextmanager
def hold(saga_id: int, *, wait: bool = False) -> Iterator[Held | None]:
    """Try (or, `wait`, wait for) the saga's advisory lock and read it and its log
    (sagas.batch.hold_many): None when another holds it. Saga.DoesNotExist if there is no
    such saga."""
    with hold_many([saga_id], wait=wait) as holding:
        if saga_id in holding.missing:
            raise Saga.DoesNotExist(f"no saga {saga_id}")
        yield holding.held.get(saga_id)


def append_event(saga: Saga, event: str, *, step: str = "", detail: str = "",
            state: str | None = None, lease_for: float | None = None,
            before: Sequence[Pending] = (), epoch: tuple[int, int] = (0, 0)) -> int:
    """Append `before` and then one event (with the state it implies) and extend the lease, in
    one statement: it commits on its own unless the caller holds a transaction (start_saga
    does). `epoch` is (the saga's epoch we expect, the one we set): a coordinator's first
    append bumps it, so one that was taken over (its lock's session ended and recovery went
    on) is refused from then on, as is any append to a saga already final.
    Returns the seq of the last event."""
    seconds = lease_seconds() if lease_for is None else lease_for
    rows = append_many([Append(saga.pk, [*before, Pending(event, step, detail)], state,
                               seconds, epoch)])
    if saga.pk not in rows:
        raise SagaError(refused_reason(saga.pk, event, ours=epoch[1]))
    seq, saga.state, saga.lease_until = rows[saga.pk]
    saga.epoch = epoch[1]
    return seq


def at_boundary(saga: Saga, event: str, step: str) -> None:
    """Right after `event` committed: a fault may strike at this boundary of the log
    (`saga.after.<event>[.<step>]`, armed for this saga only)."""
    point = f"saga.after.{event}" + (f".{step}" if step else "")
    if point in POINTS:
        with faults.scoped(saga.fault_scope):
            faults.fire(point)


def call_step(call, saga: Saga, step: str, *, deadline: float | None) -> None:
    """Call a service. An answer later than `deadline` counts as no answer: the step failed
    (its late effect, if any, is undone by its compensation like any other)."""
    started = time.monotonic()
    job = f"saga:{saga.pk}:{step}:{'cancel' if deadline is None else 'book'}"
    history.start(job)
    ok = False
    try:
        with faults.scoped(saga.fault_scope):
            call(saga_id=saga.pk, step=step)
        ok = True
    finally:
        history.record("end", job, ok=ok)
    took = time.monotonic() - started
    if deadline is not None and took > deadline:
        raise late(deadline, took)


def call_steps(call_many, sagas: list[Saga], step: str, *,
               deadline: float) -> dict[int, Exception | None]:
    """call_step() for one step of several sagas, in one call of the service (each saga's
    faults still its own): {saga id: its error or None}. The call's time is each one's."""
    started = time.monotonic()
    jobs = {saga.pk: f"saga:{saga.pk}:{step}:book" for saga in sagas}
    for job in jobs.values():
        history.start(job)
    errors: dict[int, Exception | None] = {saga.pk: None for saga in sagas}
    try:
        errors = call_many(saga_ids=list(jobs), step=step,
                           scopes={saga.pk: saga.fault_scope for saga in sagas})
    finally:
        for saga_id, job in jobs.items():
            history.record("end", job, ok=errors.get(saga_id) is None)
    took = time.monotonic() - started
    if took > deadline:
        return {saga_id: error or late(deadline, took) for saga_id, error in errors.items()}
    return errors


def late(deadline: float, took: float) -> StepTimeout:
    return StepTimeout(f"no answer within {deadline:g}s (answered after {took:.1f}s)")


def describe_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def comp_backoff(attempt: int) -> float:
    base = float(settings.SAGA_COMP_BACKOFF_SECONDS)
    return min(base * 2 ** (attempt - 1), 60.0)


def advance(*, saga_id: int) -> State | None:
    """Advance one saga as far as it can go now. Returns the state it stopped in, or None when
    another coordinator holds it (that one advances it)."""
    outcome = advance_many(saga_ids=[saga_id])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def advance_many(*, saga_ids: Sequence[int]) -> list[State | None | Exception]:
    """Advance the sagas together (sagas.batch), each as far as it can go now: for each id,
    the state it stopped in, None when another coordinator holds it, or the error that
    stopped it (no such saga; refused: final already, or taken over)."""
    if connection.in_atomic_block:
        raise SagaError(ADVANCE_IN_TRANSACTION)
    with hold_many(saga_ids) as holding:
        tracks = {i: Track(h.saga, h.log, epoch=(h.saga.epoch, h.saga.epoch + 1),
                           lease=lease_seconds()) for i, h in holding.held.items()}
        drive(list(tracks.values()), Coordinating())
        for t in tracks.values():
            if t.stuck:
                Saga.objects.filter(pk=t.saga.pk, epoch=t.epoch[0]).update(
                    state=State.STUCK, lease_until=None)
    outcomes: list[State | None | Exception] = []
    for i in saga_ids:
        if i in holding.missing:
            outcomes.append(Saga.DoesNotExist(f"no saga {i}"))
        elif i not in tracks:
            outcomes.append(None)
        else:
            outcomes.append(cast("State | Exception | None", tracks[i].outcome))
    return outcomes


def open_work(t: Track, w: Work) -> None:
    """The event that opens the work, waiting for the write that commits it."""
    match w.decision:
        case d.RunStep(step, recovery):
            t.add(Event.STEP_START, step=step,
                  detail="forward recovery: in doubt, idempotent, run again" if recovery else "")
        case d.Compensate(step, attempt):
            t.add(Event.COMP_START, step=step, detail=f"attempt {attempt}")


def do_work(t: Track, w: Work, *, on_retry) -> None:
    """Once its opening event committed: the step (or its compensation), and the event that
    closes it. A compensation that failed and will be tried again (not the last try) calls
    `on_retry(track, step, error, attempt)`, which settles the saga for now."""
    definition = DEFINITIONS[t.saga.kind]
    match w.decision:
        case d.RunStep(step):
            at_boundary(t.saga, Event.STEP_START, step)
            try:
                call_step(definition.step(step).action, t.saga, step,
                          deadline=float(settings.SAGA_STEP_DEADLINE_SECONDS))
            except Exception as e:
                t.add(Event.STEP_FAIL, step=step, detail=describe_error(e))
            else:
                t.add(Event.STEP_END, step=step)
        case d.Compensate(step, attempt):
            at_boundary(t.saga, Event.COMP_START, step)
            try:
                call_step(definition.step(step).compensation, t.saga, step, deadline=None)
            except Exception as e:
                if attempt >= settings.SAGA_MAX_COMP_ATTEMPTS:
                    # The last try: nothing will retry it. The next decision is Stuck, now.
                    t.add(Event.COMP_FAIL, step=step,
                          detail=f"{describe_error(e)}; {GIVING_UP.format(tries=attempt)}")
                    return
                on_retry(t, step, e, attempt)
                t.settled = True
                return
            t.add(Event.COMP_END, step=step)


def do_works(group: list[tuple[Track, Work]], *, on_retry) -> None:
    """do_work() for a round: the sagas running a step their definition can run for many
    at once (Step.action_many) run it in one call; the rest one at a time."""
    many: dict[tuple[str, str], list[Track]] = {}
    for t, w in group:
        spec = DEFINITIONS[t.saga.kind].step(w.step)
        if len(group) > 1 and isinstance(w.decision, d.RunStep) and spec.action_many:
            many.setdefault((t.saga.kind, w.step), []).append(t)
        else:
            do_work(t, w, on_retry=on_retry)
    for (kind, step), tracks in many.items():
        for t in tracks:
            at_boundary(t.saga, Event.STEP_START, step)
        errors = call_steps(DEFINITIONS[kind].step(step).action_many, [t.saga for t in tracks],
                            step, deadline=float(settings.SAGA_STEP_DEADLINE_SECONDS))
        for t in tracks:
            error = errors[t.saga.pk]
            if error is None:
                t.add(Event.STEP_END, step=step)
            else:
                t.add(Event.STEP_FAIL, step=step, detail=describe_error(error))


def work_of(decision: d.RunStep | d.Compensate, definition: SagaDefinition) -> Work:
    """Compensations and idempotent steps share rounds; the rest runs one saga at a time."""
    return Work(decision, together=isinstance(decision, d.Compensate)
                or definition.step(decision.step).idempotent)


def bookkeeping(t: Track, decision: d.Decision) -> bool:
    """Record a decision that needs no work (ending, aborting); False if it is not one."""
    match decision:
        case d.Complete():
            t.add(Event.SAGA_END, detail="completed", state=State.COMPLETED)
        case d.Abort(reason):
            t.add(Event.SAGA_ABORT, detail=reason, state=State.COMPENSATING)
        case d.FinishCompensated():
            t.add(Event.SAGA_END, detail="compensated", state=State.COMPENSATED)
        case _:
            return False
    return True


class Driving:
    """What both drivers do alike (sagas.batch.Driver): open work with its event, run a round
    of it, and give up on a saga whose compensation keeps failing. A compensation that failed
    and will be tried again is each one's own (`retry_later`)."""

    def open(self, t: Track, w: Work) -> None:
        open_work(t, w)

    def run(self, group: list[tuple[Track, Work]]) -> None:
        do_works(group, on_retry=self.retry_later)

    def retry_later(self, t: Track, step: str, e: Exception, attempt: int) -> None:
        raise NotImplementedError

    @staticmethod
    def stuck(t: Track, step: str, tries: int, outcome: object) -> None:
        logger.error("saga %s is stuck: compensating %s failed %s times", t.saga.pk, step, tries)
        t.stuck, t.outcome = True, outcome


class Coordinating(Driving):
    """The coordinator's Driver: every step of every saga is its to run."""

    def next_work(self, t: Track) -> Work | None:
        definition = DEFINITIONS[t.saga.kind]
        while True:
            if t.saga.state == State.STUCK:
                t.outcome = State.STUCK
                return None
            decision = decide(t, definition)
            if bookkeeping(t, decision):
                continue
            match decision:
                case d.Done(outcome):
                    t.outcome = State(outcome)
                    return None
                case d.RunStep() | d.Compensate():
                    return work_of(decision, definition)
                case d.Stuck(step, tries):
                    self.stuck(t, step, tries, State.STUCK)
                    return None
            raise AssertionError(decision)

    def retry_later(self, t: Track, step: str, e: Exception, attempt: int) -> None:
        wait = comp_backoff(attempt)
        t.add(Event.COMP_FAIL, step=step, lease_for=wait,
              detail=f"{describe_error(e)}; retry in {wait:g}s")
        # recovery retries it when the lease (the backoff) runs out
        t.outcome = State(t.saga.state)
