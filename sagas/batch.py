"""Advancing many sagas at once, with commits shared between them.

One process holds a batch of sagas (their advisory locks, taken in one statement) and advances
them together, in the log's rules (sagas.coordinator): an event that opens work (`STEP_START`,
`COMP_START`) commits before the work, and everything else waits for the next commit of its
saga. What the batch shares is the commit: every saga's opening event of a round, with the
events that waited, is one statement (`APPEND_MANY`), so a saga costs a few rows rather than a
few transactions.

    round 1: STEP_START hotel for every saga (one commit); their hotels booked (one statement)
    round 2: STEP_END hotel + STEP_START car for every saga (one commit); their cars booked
    then a few sagas at a time: STEP_END car + STEP_START flight (one commit); their flights
    booked; STEP_END flight + SAGA_END commit with the next few sagas' STEP_START flight

Work that is not idempotent (the flight) is never in doubt for more than a few sagas: it runs
`SAGA_IN_DOUBT_MAX` sagas at a time (4; 1 is one saga at a time), so a process that dies leaves
at most that many flights in doubt (each compensated: backward recovery), not a batch of them.
Idempotent work that dies in doubt is run again (forward recovery) for every saga of its round.
A saga with faults armed for it (a person's experiment) runs alone, after the rest of its batch.

Who decides and what a saga's service may do is a `Driver`: a coordinator drives every step
(sagas.coordinator), a choreographed service only its own and hands over the rest with an
event (sagas.choreography).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import psycopg
from django.conf import settings
from django.db import connection, transaction

from common import sideconn
from common.errors import OperationError
from common.sideconn import side_cursor, side_pipeline
from outbox.services import publish_many
from sagas import decide as d
from sagas.models import FINAL_STATES, Saga

logger = logging.getLogger(__name__)

LOCK_CLASS = 0x5A6A  # first key of the two-key advisory lock: "saga"
_SAGA_COLUMNS = [f.column for f in Saga._meta.concrete_fields]
_SAGA_FIELDS = [f.attname for f in Saga._meta.concrete_fields]
# Waiting for locks: in one order (the ids'), so two batches never wait for each other.
_LOCK = {False: "SELECT id FROM unnest(%s::bigint[]) AS id "
                "WHERE pg_try_advisory_lock(%s, id::int)",
         True: "SELECT id FROM (SELECT DISTINCT unnest(%s::bigint[]) AS id ORDER BY 1) ids, "
               "LATERAL (SELECT pg_advisory_lock(%s, id::int)) locked"}
_UNLOCK = "SELECT count(pg_advisory_unlock(%s, id::int)) FROM unnest(%s::bigint[]) AS id"
# Each saga's log through the (saga, seq) index (OFFSET 0 keeps the subquery from being
# turned into a join, which may scan the whole log).
_LOAD = f"""
SELECT {", ".join(f"s.{c}" for c in _SAGA_COLUMNS)}, l.seq, l.event, l.step
  FROM sagas_saga s
  LEFT JOIN LATERAL (SELECT seq, event, step FROM sagas_sagalog
                      WHERE saga_id = s.id ORDER BY seq OFFSET 0) l ON true
 WHERE s.id = ANY(%(ids)s::bigint[])
 ORDER BY s.id, l.seq"""

APPEND_MANY = """
WITH e AS (
    SELECT e.*, row_number() OVER (PARTITION BY e.saga ORDER BY e.n) AS k
      FROM unnest(%(of)s::bigint[], %(events)s::text[], %(steps)s::text[], %(details)s::text[])
           WITH ORDINALITY AS e(saga, event, step, detail, n)),
w AS (
    SELECT w.*, (SELECT count(*) FROM e WHERE e.saga = w.id) AS added
      FROM unnest(%(sagas)s::bigint[], %(states)s::text[], %(leases)s::float8[],
                  %(expect)s::int[], %(epochs)s::int[]) AS w(id, state, lease, expect, epoch)),
s AS (
    UPDATE sagas_saga t
       SET last_seq = t.last_seq + w.added, state = coalesce(w.state, t.state),
           updated_at = now(),
           lease_until = clock_timestamp() + make_interval(secs => w.lease),
           epoch = w.epoch
      FROM w
     WHERE t.id = w.id AND t.id = ANY(%(sagas)s::bigint[])  -- the primary key's index
       AND t.state <> ALL(%(final)s) AND t.epoch = w.expect
 RETURNING t.id, t.last_seq, t.state, t.lease_until, w.added),
i AS (
    INSERT INTO sagas_sagalog (saga_id, seq, event, step, detail, pid, at)
    SELECT s.id, s.last_seq - s.added + e.k, e.event, e.step, e.detail, %(pid)s,
           clock_timestamp()
      FROM s JOIN e ON e.saga = s.id
     ORDER BY e.n)
SELECT id, last_seq, state, lease_until FROM s
"""

ALREADY_FINAL = "saga {id} is already final: {event} refused (a late coordinator?)"
TAKEN_OVER = ("saga {id} was taken over by another coordinator (epoch {epoch}, ours {ours}): "
              "{event} refused")


class SagaError(OperationError):
    """A saga request that cannot be honoured."""


@dataclass(frozen=True)
class Pending:
    """An event to append."""

    event: str
    step: str = ""
    detail: str = ""


@dataclass
class Held:
    """A saga whose lock we hold, and its log as it was once we held it."""

    saga: Saga
    log: list[d.Entry]


@dataclass
class Holding:
    """What a batch of ids came to: the sagas we hold, and the ids that are not sagas."""

    held: dict[int, Held]
    missing: set[int]


@contextlib.contextmanager
def hold_many(saga_ids: Iterable[int], *, wait: bool = False) -> Iterator[Holding]:
    """Try (or, `wait`, wait for) the advisory lock of each saga on the side session, and read
    the sagas and their logs: two statements in one round trip, the read's snapshot taken once
    the locks are ours (the side session is READ COMMITTED), so it sees every event their
    previous holders committed. The server releases the locks by itself if this process
    dies; a failure after the lock statement releases them."""
    ids = sorted(set(saga_ids))
    try:
        with side_pipeline() as conn:
            locked = conn.execute(_LOCK[wait], [ids, LOCK_CLASS])
            loaded = conn.execute(_LOAD, {"ids": ids})
    except Exception:
        _release(ids)  # the locks may have been taken before the read failed
        raise
    ours = sorted(row[0] for row in locked.fetchall())
    try:
        by_id: dict[int, Held] = {}
        n = len(_SAGA_COLUMNS)
        for row in loaded.fetchall():
            saga_id = row[0]
            if saga_id not in by_id:
                by_id[saga_id] = Held(Saga.from_db("default", _SAGA_FIELDS, row[:n]), [])
            if row[n] is not None:
                by_id[saga_id].log.append(d.Entry(*row[n:]))
        yield Holding({i: by_id[i] for i in ours if i in by_id},
                      {i for i in ids if i not in by_id})
    finally:
        if ours:
            _release(ours)


def _release(ids: list[int]) -> None:
    """Unlock the sagas on the side session (nothing for one this session does not hold); a
    session that cannot say so is ended, which releases every lock it holds."""
    try:
        with side_cursor() as cur:
            cur.execute(_UNLOCK, [LOCK_CLASS, ids])
    except psycopg.Error as e:
        logger.warning("sagas %s: cannot unlock them (%s); ending the side session instead",
                       ids, e)
        sideconn.close()


@dataclass(eq=False)  # each track is itself: compared by identity
class Track:
    """One held saga in a batch: its log (with the events not yet written), what the next
    write sets, and what became of it."""

    saga: Saga
    log: list[d.Entry]
    epoch: tuple[int, int]  # (the epoch the next write expects, the one it sets)
    lease: float  # seconds of lease each write gives (0: none)
    service: str = ""  # choreographed: whose reaction this is
    waiting: list[Pending] = field(default_factory=list)
    state: str | None = None  # set by the next write
    lease_for: float | None = None  # the next write's lease, when not `lease`
    publish: str = ""  # choreographed: the event this reaction hands over with
    did: list[str] = field(default_factory=list)
    settled: bool = False  # nothing more to do in this batch
    stuck: bool = False
    outcome: object = None  # what its job returns (an exception: the job failed)

    def add(self, event: str, *, step: str = "", detail: str = "", state: str | None = None,
            lease_for: float | None = None) -> None:
        self.waiting.append(Pending(event, step, detail[:2000]))
        self.log.append(d.Entry(self.log[-1].seq + 1, event, step))
        self.did.append(f"{event} {step}".strip())
        if state is not None:
            self.state = state
        if lease_for is not None:
            self.lease_for = lease_for


@dataclass(frozen=True)
class Append:
    """One saga's part of an APPEND_MANY: its events, and what its row becomes."""

    saga_id: int
    events: Sequence[Pending]
    state: str | None  # None: as it is
    lease: float  # seconds from now
    epoch: tuple[int, int]  # (the epoch its row must have, the one it gets)


def append_many(appends: Sequence[Append]) -> dict[int, tuple[int, str, datetime]]:
    """Append the events of each saga in one statement (it commits on its own unless the
    caller holds a transaction): {saga id: (its last seq, state, lease_until)} for each saga
    whose row took them; a saga missing from it refused (final, or taken over), and nothing
    of its was written."""
    params: dict[str, Any] = {
        "of": [a.saga_id for a in appends for _ in a.events],
        "events": [p.event for a in appends for p in a.events],
        "steps": [p.step for a in appends for p in a.events],
        "details": [p.detail[:2000] for a in appends for p in a.events],
        "sagas": [a.saga_id for a in appends], "states": [a.state for a in appends],
        "leases": [float(a.lease) for a in appends],
        "expect": [a.epoch[0] for a in appends], "epochs": [a.epoch[1] for a in appends],
        "final": [str(s) for s in FINAL_STATES], "pid": os.getpid(),
    }
    with connection.cursor() as cur:
        cur.execute(APPEND_MANY, params)
        rows = {row[0]: tuple(row[1:]) for row in cur.fetchall()}
    if logger.isEnabledFor(logging.INFO):
        for a in appends:
            if a.saga_id in rows:
                last = rows[a.saga_id][0]
                for n, p in enumerate(a.events):
                    logger.info("saga %s: %s %s %s", a.saga_id, last - len(a.events) + 1 + n,
                                p.event, p.step)
    return rows


def write(tracks: Iterable[Track]) -> list[Track]:
    """Append the waiting events of `tracks` in one statement (and publish the events they hand
    over with, in the same transaction). Returns the tracks whose saga refused (final, or taken
    over): their events are not written, and they are settled with the reason (SagaError)."""
    tracks = [t for t in tracks if t.waiting]
    if not tracks:
        return []
    publishing = [t for t in tracks if t.publish]
    with transaction.atomic() if publishing else contextlib.nullcontext():
        rows = append_many([
            Append(t.saga.pk, t.waiting, t.state,
                   t.lease if t.lease_for is None else t.lease_for, t.epoch) for t in tracks])
        if publishing:
            publish_many([(t.publish, {"saga_id": t.saga.pk}) for t in publishing
                          if t.saga.pk in rows])
    refused = []
    for t in tracks:
        row = rows.get(t.saga.pk)
        if row is None:
            refused.append(t)
            t.settled, t.outcome = True, SagaError(_why_refused(t))
            t.waiting, t.publish = [], ""
            continue
        _, t.saga.state, t.saga.lease_until = row
        t.saga.epoch = t.epoch[1]
        t.epoch = (t.epoch[1], t.epoch[1])
        t.waiting, t.state, t.lease_for, t.publish = [], None, None, ""
    return refused


def _why_refused(t: Track) -> str:
    return refused_reason(t.saga.pk, t.waiting[-1].event, ours=t.epoch[1])


def refused_reason(saga_id: int, event: str, *, ours: int) -> str:
    """Why the saga's row refused an append: final already, or another took it over."""
    now = Saga.objects.filter(pk=saga_id).values("state", "epoch").first() or {}
    if now.get("state") in FINAL_STATES:
        return ALREADY_FINAL.format(id=saga_id, event=event)
    return TAKEN_OVER.format(id=saga_id, epoch=now.get("epoch"), ours=ours, event=event)


@dataclass(frozen=True)
class Work:
    """What a saga does next: run a step, or compensate one."""

    decision: d.RunStep | d.Compensate
    together: bool  # may share its round with other sagas' work (it may run again safely)

    @property
    def step(self) -> str:
        return self.decision.step


class Driver(Protocol):
    """Who advances the sagas: what the next work of a saga is (None: it settled in this
    batch), and doing a round of work once its opening events committed."""

    def next_work(self, track: Track) -> Work | None: ...

    def open(self, track: Track, work: Work) -> None: ...

    def run(self, group: list[tuple[Track, Work]]) -> None: ...


def drive(tracks: list[Track], driver: Driver) -> None:
    """Advance every track as far as it goes now. A saga with faults armed for it (a person's
    experiment) goes alone, after the others: the crash it asked for strikes it only."""
    _drive([t for t in tracks if not t.saga.fault_scope], driver)
    for t in tracks:
        if t.saga.fault_scope:
            _drive([t], driver)


def _drive(tracks: list[Track], driver: Driver) -> None:
    """Rounds of work that may share a commit, then the rest a few sagas at a time; whatever
    waits is written at the end (also when a failure stops the batch, so what happened
    stays in the log)."""
    work: dict[int, tuple[Track, Work]] = {}
    try:
        for t in tracks:
            _next(t, driver, work)
        while work:
            together = [tw for tw in work.values() if tw[1].together]
            # Work that must not run twice goes a few sagas at a time (SAGA_IN_DOUBT_MAX):
            # no more than that is in doubt if this process dies.
            group = together or list(work.values())[:settings.SAGA_IN_DOUBT_MAX]
            for t, w in group:
                del work[t.saga.pk]
                driver.open(t, w)
            refused = write([t for t, _ in group] + [t for t in tracks if t.settled])
            group = [(t, w) for t, w in group if t not in refused]
            driver.run(group)
            for t, _ in group:
                _next(t, driver, work)
    except BaseException:
        with contextlib.suppress(Exception):
            write(tracks)
        raise
    write(tracks)


def _next(track: Track, driver: Driver, work: dict[int, tuple[Track, Work]]) -> None:
    nxt = None if track.settled else driver.next_work(track)
    if nxt is None:
        track.settled = True
    else:
        work[track.saga.pk] = (track, nxt)


def decide(track: Track, definition) -> d.Decision:
    return d.decide(track.log, definition.steps,
                    max_comp_attempts=settings.SAGA_MAX_COMP_ATTEMPTS,
                    max_forward_attempts=settings.SAGA_MAX_FORWARD_ATTEMPTS,
                    since_seq=track.saga.retry_from_seq)
