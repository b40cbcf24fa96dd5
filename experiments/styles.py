"""Orchestrated beside choreographed: per saga style, what survived and what it took.

Read from the scratch database after the run has quiesced, in one snapshot:

- outcomes: started, completed, compensated, stuck, half done, flights booked twice (the
  verdicts of sagas.selectors, the same as the run's whole);
- time from request to outcome: a saga's `SAGA_END.at` minus its `SAGA_START.at` (both
  written by the database's clock), p50 and p99 by nearest rank, over the sagas that ended;
- messages: what carried the saga from one process to the next. Choreographed: its outbox
  messages (payload `saga_id`), each the event one service hands the next (the relay turns
  each into one job). Orchestrated: its coordinator's jobs (django-q2's result rows named
  `saga <id>` and `saga <id> retry`: one row per job however often it ran, written in the
  transaction that acknowledges it). The services a coordinator calls are calls inside its
  process, and a coordinator resumed by the recoverer (its lease ran out) is no message:
  neither counts;
- commits: the distinct transactions that wrote the saga's rows as they are at the end (its
  log, its row, its bookings, its outbox messages), by each row's `xmin`. An updated row shows
  only its last writer (a booking later cancelled shows the cancellation; a relayed message
  the relay's commit), so this is a lower bound.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from django.db import connection

from common.db import snapshot

TASK_NAME = re.compile(r"^saga (\d+)(?: retry)?$")


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest rank: the smallest value with at least `fraction` of them at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _commits_sql() -> str:
    from outbox.models import OutboxMessage
    from sagas.models import Saga, SagaLog
    from travel.services import MODELS

    parts = [f"SELECT saga_id, xmin::text AS x FROM {SagaLog._meta.db_table}",
             f"SELECT id, xmin::text FROM {Saga._meta.db_table}"]
    parts += [f"SELECT saga_id, xmin::text FROM {model._meta.db_table}"
              for model in MODELS.values()]
    parts.append(f"SELECT (payload->>'saga_id')::bigint, xmin::text "
                 f"FROM {OutboxMessage._meta.db_table} "
                 "WHERE jsonb_typeof(payload->'saga_id') = 'number'")
    return ("SELECT saga_id, count(DISTINCT x) FROM (" + " UNION ALL ".join(parts)
            + ") rows GROUP BY saga_id")


def commits_per_saga() -> dict[int, int]:
    """{saga id: distinct transactions among the last writers of its rows}."""
    with connection.cursor() as cur:
        cur.execute(_commits_sql())
        return {int(saga): n for saga, n in cur.fetchall()}


def messages_per_saga() -> dict[int, int]:
    """{saga id: messages}: a choreographed saga's outbox messages, an orchestrated saga's
    coordinator jobs (see the module's docstring)."""
    from django_q.models import Task

    from outbox.models import OutboxMessage
    from sagas.models import Saga, Style

    counts: Counter[int] = Counter()
    orchestrated = set(Saga.objects.filter(style=Style.ORCHESTRATED)
                       .values_list("pk", flat=True))
    for name in Task.objects.filter(name__startswith="saga ").values_list("name", flat=True):
        found = TASK_NAME.match(name)
        if found and int(found.group(1)) in orchestrated:
            counts[int(found.group(1))] += 1
    choreographed = set(Saga.objects.filter(style=Style.CHOREOGRAPHED)
                        .values_list("pk", flat=True))
    for saga_id in OutboxMessage.objects.filter(payload__has_key="saga_id").values_list(
            "payload__saga_id", flat=True):
        if isinstance(saga_id, int) and saga_id in choreographed:
            counts[saga_id] += 1
    return dict(counts)


def seconds_to_outcome() -> dict[int, float]:
    """{saga id: seconds from its SAGA_START to its SAGA_END}, for the sagas that ended."""
    from sagas.models import Event, SagaLog

    starts: dict[int, datetime] = {}
    ends: dict[int, datetime] = {}
    for saga_id, event, at in SagaLog.objects.filter(
            event__in=[Event.SAGA_START, Event.SAGA_END]).values_list("saga_id", "event", "at"):
        (starts if event == Event.SAGA_START else ends)[saga_id] = at
    return {i: (ends[i] - starts[i]).total_seconds() for i in ends if i in starts}


def _mean(values: Iterable[int], n: int) -> float:
    return round(sum(values) / n, 2) if n else 0.0


def by_style(styles: Sequence[str], verdicts: dict[int, str]) -> dict[str, dict]:
    """Each style's row of the side-by-side table. `verdicts`: sagas.selectors.judge of every
    saga of the run."""
    from sagas.models import ACTIVE_STATES, Saga, State
    from sagas.selectors import Verdict

    with snapshot():
        sagas = list(Saga.objects.values_list("pk", "style", "state"))
        messages = messages_per_saga()
        commits = commits_per_saga()
        took = seconds_to_outcome()
    half = {Verdict.COMPENSATED_BUT_BOOKED, Verdict.COMPLETED_NOT_BOOKED}
    result = {}
    for style in styles:
        mine = [(pk, state) for pk, s, state in sagas if s == style]
        ids = [pk for pk, _ in mine]
        states = Counter(state for _, state in mine)
        times = [took[i] for i in ids if i in took]
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        result[style] = {
            "started": len(mine),
            "completed": states[State.COMPLETED],
            "compensated": states[State.COMPENSATED],
            "stuck": states[State.STUCK],
            "half_done": sum(1 for pk, state in mine
                             if verdicts.get(pk) in half or state in ACTIVE_STATES),
            "flights_booked_twice": sum(1 for i in ids
                                        if verdicts.get(i) == Verdict.FLIGHT_BOOKED_TWICE),
            "outcome_p50_s": None if p50 is None else round(p50, 3),
            "outcome_p99_s": None if p99 is None else round(p99, 3),
            "messages_per_saga": _mean((messages.get(i, 0) for i in ids), len(ids)),
            "messages_max": max((messages.get(i, 0) for i in ids), default=0),
            "messages": sum(messages.get(i, 0) for i in ids),
            "commits_per_saga": _mean((commits.get(i, 0) for i in ids), len(ids)),
            "commits_max": max((commits.get(i, 0) for i in ids), default=0),
            "commits": sum(commits.get(i, 0) for i in ids),
        }
    return result
