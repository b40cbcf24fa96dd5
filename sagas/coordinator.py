"""The saga execution coordinator (SEC): advance one saga by its log.

Every log event is committed before what it announces happens, so the log tells what may
have happened: a `STEP_START` commits before the step runs, a `COMP_START` before the
compensation. An event that closes one (`STEP_END`, `STEP_FAIL`, `COMP_END`) commits with the
event that opens the next, in one statement (one commit fewer per step, and nothing happens
between the two). What to do next is decided from the log alone (sagas.decide).

Two coordinators never advance one saga at once: advancing holds a PostgreSQL advisory lock on
a separate session, which the server releases by itself when a coordinator dies. The lease
(`Saga.lease_until`) is how a dead coordinator is noticed: every event extends it, and
`recover_sagas` resumes non-final sagas whose lease ran out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.db import connection

from common import sideconn
from common.errors import OperationError
from common.sideconn import side_cursor, side_pipeline
from faults import services as faults
from faults.points import POINTS
from pgbroker import history
from sagas import decide as d
from sagas.definitions import DEFINITIONS, SagaDefinition
from sagas.models import FINAL_STATES, Event, Saga, State

logger = logging.getLogger(__name__)

RUN_SAGA_TASK = "sagas.tasks.run_saga"
LOCK_CLASS = 0x5A6A  # first key of the two-key advisory lock: "saga"
ADVANCE_IN_TRANSACTION = "advance() must not run inside a transaction: each event commits"
ALREADY_FINAL = "saga {id} is already final: {event} refused (a late coordinator?)"
GIVING_UP = ("attempt {tries}, the last: no retry, the saga is stuck until a person retries it "
             "(admin: Sagas > Retry selected stuck sagas)")
TAKEN_OVER = ("saga {id} was taken over by another coordinator (epoch {epoch}, ours {ours}): "
              "{event} refused")


class SagaError(OperationError):
    """A saga request that cannot be honoured."""


class StepTimeout(Exception):
    """The service did not answer within the step's deadline."""


def lease_seconds() -> float:
    return float(settings.SAGA_LEASE_SECONDS)


_LOCK = {False: "SELECT pg_try_advisory_lock(%s, %s)",
         True: "SELECT pg_advisory_lock(%s, %s), true"}
_UNLOCK = "SELECT pg_advisory_unlock(%s, %s)"
_SAGA_COLUMNS = [f.column for f in Saga._meta.concrete_fields]
_LOAD = f"""
SELECT {", ".join(f"s.{c}" for c in _SAGA_COLUMNS)}, l.seq, l.event, l.step
  FROM sagas_saga s LEFT JOIN sagas_sagalog l ON l.saga_id = s.id
 WHERE s.id = %s
 ORDER BY l.seq"""


@dataclass
class Held:
    """A saga whose lock we hold, and its log as it was once we held it."""

    saga: Saga
    log: list[d.Entry]


@contextlib.contextmanager
def hold(saga_id: int, *, wait: bool = False) -> Iterator[Held | None]:
    """Try (or, `wait`, wait for) the saga's advisory lock on the side session, and read the
    saga and its log: None when another holds it. The lock and the read are two statements
    in one round trip (pipelined), the read's snapshot taken once the lock is ours (the side
    session is READ COMMITTED), so it sees every event the previous holder committed. The
    server releases the lock by itself if this process dies. Saga.DoesNotExist if there is
    no such saga."""
    try:
        with side_pipeline() as conn:
            locked = conn.execute(_LOCK[wait], [LOCK_CLASS, saga_id])
            loaded = conn.execute(_LOAD, [saga_id])
    except Exception:
        _release(saga_id)  # the lock may have been taken before the read failed
        raise
    row = locked.fetchone()
    got = row is not None and bool(row[-1])
    try:
        if not got:
            yield None
            return
        rows = loaded.fetchall()
        if not rows:
            raise Saga.DoesNotExist(f"no saga {saga_id}")
        n = len(_SAGA_COLUMNS)
        saga = Saga.from_db("default", [f.attname for f in Saga._meta.concrete_fields],
                            rows[0][:n])
        log = [d.Entry(seq, event, step) for seq, event, step in (r[n:] for r in rows)
               if seq is not None]
        yield Held(saga, log)
    finally:
        if got:
            _release(saga_id)


def _release(saga_id: int) -> None:
    """Unlock the saga on the side session (nothing if this session does not hold it); a
    session that cannot say so is ended, which releases every lock it holds."""
    try:
        with side_cursor() as cur:
            cur.execute(_UNLOCK, [LOCK_CLASS, saga_id])
    except psycopg.Error as e:
        logger.warning("saga %s: cannot unlock it (%s); ending the side session instead",
                       saga_id, e)
        sideconn.close()


APPEND = """
WITH e AS (
    SELECT * FROM unnest(%(events)s::text[], %(steps)s::text[], %(details)s::text[])
           WITH ORDINALITY AS e(event, step, detail, n)),
s AS (
    UPDATE sagas_saga
       SET last_seq = last_seq + (SELECT count(*) FROM e), state = coalesce(%(state)s, state),
           updated_at = now(),
           lease_until = clock_timestamp() + make_interval(secs => %(lease)s),
           epoch = %(epoch)s
     WHERE id = %(saga)s AND state <> ALL(%(final)s) AND epoch = %(expect)s
 RETURNING id, last_seq, state, lease_until),
i AS (
    INSERT INTO sagas_sagalog (saga_id, seq, event, step, detail, pid, at)
    SELECT s.id, s.last_seq - (SELECT count(*) FROM e) + e.n, e.event, e.step, e.detail,
           %(pid)s, clock_timestamp()
      FROM s, e
 RETURNING seq)
SELECT last_seq, state, lease_until FROM s
"""

# Events that close what the previous event opened: they wait for the next event and commit with
# it (advance() writes one left waiting when it stops).
CLOSING = frozenset({Event.STEP_END, Event.STEP_FAIL, Event.COMP_END})


@dataclass(frozen=True)
class Pending:
    """An event to append: what `_append` writes."""

    event: str
    step: str = ""
    detail: str = ""


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
    rows = [*before, Pending(event, step, detail)]
    with connection.cursor() as cur:
        cur.execute(APPEND, {"state": state, "lease": seconds, "saga": saga.pk,
                             "expect": epoch[0], "epoch": epoch[1],
                             "final": [str(s) for s in FINAL_STATES],
                             "events": [r.event for r in rows], "steps": [r.step for r in rows],
                             "details": [r.detail[:2000] for r in rows], "pid": os.getpid()})
        row = cur.fetchone()
    if row is None:
        now = Saga.objects.filter(pk=saga.pk).values("state", "epoch").first() or {}
        if now.get("state") in FINAL_STATES:
            raise SagaError(ALREADY_FINAL.format(id=saga.pk, event=event))
        raise SagaError(TAKEN_OVER.format(id=saga.pk, epoch=now.get("epoch"), ours=epoch[1],
                                          event=event))
    seq, saga.state, saga.lease_until = row
    saga.epoch = epoch[1]
    for n, r in enumerate(rows):
        logger.info("saga %s: %s %s %s", saga.pk, seq - len(rows) + 1 + n, r.event, r.step)
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
        raise StepTimeout(f"no answer within {deadline:g}s (answered after {took:.1f}s)")


def describe_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def comp_backoff(attempt: int) -> float:
    base = float(settings.SAGA_COMP_BACKOFF_SECONDS)
    return min(base * 2 ** (attempt - 1), 60.0)


def advance(*, saga_id: int) -> State | None:
    """Advance one saga as far as it can go now. Returns the state it stopped in, or None when
    another coordinator holds it (that one advances it)."""
    if connection.in_atomic_block:
        raise SagaError(ADVANCE_IN_TRANSACTION)
    with hold(saga_id) as held:
        if held is None:
            return None
        writer = LogWriter(held.saga, held.log, takes_over=True)
        try:
            while True:
                outcome = _advance_once(held.saga, DEFINITIONS[held.saga.kind], writer)
                if outcome is not None:
                    return outcome
        finally:
            writer.flush()


class LogWriter:
    """The lock holder's copy of a saga's log, and the closing events waiting to be appended
    with the next event (CLOSING: they commit with the event that opens what comes next).

    `takes_over` (a coordinator): the first append bumps the saga's epoch, so a coordinator
    taken over since is refused from then on, and every append extends the lease; without it
    (a choreographed service's reaction, which has neither epoch nor lease) appends expect the
    epoch as read and leave no lease."""

    def __init__(self, saga: Saga, log: list[d.Entry], *, takes_over: bool) -> None:
        self.saga, self.log = saga, log
        self.waiting: list[Pending] = []
        self.epoch = (saga.epoch, saga.epoch + 1) if takes_over else (saga.epoch, saga.epoch)
        self.lease: float | None = None if takes_over else 0

    def append(self, event: str, *, step: str = "", detail: str = "", state: str | None = None,
               lease_for: float | None = None) -> None:
        if event in CLOSING:
            self.waiting.append(Pending(event, step, detail))
            seq = self.log[-1].seq + 1  # only the lock holder appends: this is its number
        else:
            seq = append_event(self.saga, event, step=step, detail=detail, state=state,
                               lease_for=self.lease if lease_for is None else lease_for,
                               before=self.waiting, epoch=self.epoch)
            self.waiting = []
            self.epoch = (self.epoch[1], self.epoch[1])
            at_boundary(self.saga, event, step)
        self.log.append(d.Entry(seq, event, step))

    def flush(self) -> None:
        """Append the closing events left waiting (the holder stops here)."""
        if self.waiting:
            last, before = self.waiting[-1], self.waiting[:-1]
            self.waiting = []
            append_event(self.saga, last.event, step=last.step, detail=last.detail,
                         before=before, lease_for=self.lease, epoch=self.epoch)


def _advance_once(saga: Saga, definition: SagaDefinition,
                  coordinator: LogWriter) -> State | None:
    """Take one decision and act on it. Returns the state to stop at, or None to go on."""
    if saga.state == State.STUCK:
        return State(saga.state)
    append, log = coordinator.append, coordinator.log
    decision = d.decide(
        log, definition.steps,
        max_comp_attempts=settings.SAGA_MAX_COMP_ATTEMPTS,
        max_forward_attempts=settings.SAGA_MAX_FORWARD_ATTEMPTS,
        since_seq=saga.retry_from_seq,
    )
    match decision:
        case d.Done(outcome):
            return State(outcome)
        case d.RunStep(step, recovery):
            append(Event.STEP_START, step=step,
                    detail="forward recovery: in doubt, idempotent, run again" if recovery else "")
            try:
                call_step(definition.step(step).action, saga, step,
                           deadline=float(settings.SAGA_STEP_DEADLINE_SECONDS))
            except Exception as e:
                append(Event.STEP_FAIL, step=step, detail=describe_error(e))
            else:
                append(Event.STEP_END, step=step)
        case d.Complete():
            append(Event.SAGA_END, detail="completed", state=State.COMPLETED)
        case d.Abort(reason):
            append(Event.SAGA_ABORT, detail=reason, state=State.COMPENSATING)
        case d.Compensate(step, attempt):
            append(Event.COMP_START, step=step, detail=f"attempt {attempt}")
            try:
                call_step(definition.step(step).compensation, saga, step, deadline=None)
            except Exception as e:
                if attempt >= settings.SAGA_MAX_COMP_ATTEMPTS:
                    # The last try: nothing will retry it. The next decision is Stuck, now.
                    append(Event.COMP_FAIL, step=step,
                           detail=f"{describe_error(e)}; {GIVING_UP.format(tries=attempt)}")
                    return None
                wait = comp_backoff(attempt)
                append(Event.COMP_FAIL, step=step, lease_for=wait,
                        detail=f"{describe_error(e)}; retry in {wait:g}s")
                # recovery retries it when the lease (the backoff) runs out
                return State(saga.state)
            append(Event.COMP_END, step=step)
        case d.FinishCompensated():
            append(Event.SAGA_END, detail="compensated", state=State.COMPENSATED)
        case d.Stuck(step, tries):
            Saga.objects.filter(pk=saga.pk, epoch=coordinator.epoch[0]).update(
                state=State.STUCK, lease_until=None)
            logger.error("saga %s is stuck: compensating %s failed %s times", saga.pk, step,
                         tries)
            return State.STUCK
    return None
