"""Fault injection: arm named points, and fire them where the code passes them.

All bookkeeping runs on a separate autocommit connection (common.sideconn), never in the
caller's transaction: a fault that fires inside a transaction which then rolls back stays
fired, so the retry of that work runs clean (the trap docs/design.md's invariants depend on).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings

from common import validate
from common.errors import OperationError
from common.sideconn import side_cursor
from faults.models import Action
from faults.points import POINTS

logger = logging.getLogger(__name__)

CRASH_EXIT_CODE = 70
UNKNOWN_POINT = "unknown fault point {point}; known points: {known}"
BAD_ACTION = "unknown action {action}; use raise, crash or delay"
MAX_TIMES, MAX_DELAY_MS = 1_000_000, 600_000
DEFAULT_DELAY_MS = 1000
# What a person types, parsed the same way by the command, the dashboard's form and arm().
TIMES: dict[str, Any] = {"what": "times", "low": 1, "high": MAX_TIMES}
DELAY_MS: dict[str, Any] = {"what": "the delay in ms", "low": 0, "high": MAX_DELAY_MS}
FAULTS_DISABLED = "fault injection is off (FAULTS_ENABLED is false): arming would have no effect"

_scope: contextvars.ContextVar[str] = contextvars.ContextVar("fault_scope", default="")


class FaultError(OperationError):
    """A request about faults that cannot be honoured (unknown point, bad action...)."""


class InjectedFault(RuntimeError):
    """Raised by a fault point armed with the `raise` action."""

    def __init__(self, point: str) -> None:
        super().__init__(f"injected fault at {point}")
        self.point = point


UNKNOWN_TARGET = "unknown {what} {target!r}; use one of: {allowed}"
SAME_TARGET = "a {first} and a {second} cannot both target {target}"
NEVER_REACHED = ("{stopper} stops the {work} before {target}: the {action} there would never "
                 "fire")
STOPS: dict[str, str] = {Action.RAISE: "{target} failing", Action.DELAY: "{target} answering late"}
ACTION_WORDS: dict[str, str] = {Action.RAISE: "failure", Action.CRASH: "crash",
                                Action.DELAY: "slow answer"}


def plan(*, point: str, what: str, allowed: Sequence[str],
         fail: str | None = None, crash: str | None = None,
         slow: str | None = None, work: str = "") -> dict[str, str]:
    """The faults one request (a signup, a trip) asks for, as {point: action}: `fail` raises,
    `crash` kills the process, `slow` delays, each at `point` (a format string with
    `{target}`) of the target named. Refuses a target not in `allowed` and two faults on one
    target. With `work` (what the request is, e.g. "trip"), `allowed` is the order the work
    passes the targets and a failure (or a late answer) ends it: a fault on a target after
    that one would never fire, and is refused. Arm the plan with `arm(..., scope=)` so it
    strikes that request only. Messages name no command-line option: the dashboard shows
    them too."""
    chosen: dict[str, str] = {}
    targets: dict[str, Action] = {}
    for target, action in ((fail, Action.RAISE), (crash, Action.CRASH), (slow, Action.DELAY)):
        if not target:
            continue
        if target not in allowed:
            raise FaultError(UNKNOWN_TARGET.format(what=what, target=validate.shown(target),
                                                   allowed=", ".join(allowed)))
        name = point.format(target=target)
        if name in chosen:
            raise FaultError(SAME_TARGET.format(first=ACTION_WORDS[chosen[name]],
                                                second=ACTION_WORDS[action], target=target))
        chosen[name] = action
        targets[target] = action
    stoppers = [t for t, a in targets.items() if a in STOPS]
    if work and stoppers:
        first = min(stoppers, key=allowed.index)
        for target, action in targets.items():
            if allowed.index(target) > allowed.index(first):
                raise FaultError(NEVER_REACHED.format(
                    stopper=STOPS[targets[first]].format(target=first), work=work,
                    target=target, action=ACTION_WORDS[action]))
    return chosen


def enabled() -> bool:
    return bool(getattr(settings, "FAULTS_ENABLED", False))


def check_point(point: str) -> None:
    if point not in POINTS:
        raise FaultError(UNKNOWN_POINT.format(point=validate.shown(point, 60),
                                              known=", ".join(sorted(POINTS))))


def check_action(action: str) -> None:
    if action not in Action.values:
        raise FaultError(BAD_ACTION.format(action=validate.shown(action)))


@contextlib.contextmanager
def scoped(token: str | None) -> Iterator[None]:
    """Faults armed for `token` (one job's own faults) fire inside this block only."""
    reset = _scope.set(token or "")
    try:
        yield
    finally:
        _scope.reset(reset)


def fire(point: str) -> None:
    """Called where a fault may strike. Costs one settings lookup when faults are off."""
    if not enabled():
        return
    check_point(point)
    taken = _take(point, _scope.get())
    if taken is None:
        return
    action, delay_ms = taken
    if action == Action.DELAY:
        logger.warning("fault %s: sleeping %s ms", point, delay_ms)
        time.sleep(delay_ms / 1000)
    elif action == Action.RAISE:
        logger.warning("fault %s: raising", point)
        raise InjectedFault(point)
    elif action == Action.CRASH:
        logger.warning("fault %s: crashing process %s", point, os.getpid())
        sys.stderr.write(f"fault {point}: crashing process {os.getpid()} (os._exit)\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)


_TAKE_SQL = """
UPDATE faults_fault
   SET remaining = remaining - 1, fired = fired + 1, last_fired_at = now()
 WHERE point = %s AND scope = %s AND action <> ''
   AND (remaining IS NULL OR remaining > 0)
RETURNING action, delay_ms
"""


def _take(point: str, scope: str) -> tuple[str, int] | None:
    """Atomically use up one firing: this job's own fault first, then a global one."""
    with side_cursor() as cur:
        for s in ([scope, ""] if scope else [""]):
            cur.execute(_TAKE_SQL, [point, s])
            row = cur.fetchone()
            if row:
                return row[0], row[1]
    return None


def arm(
    *, point: str, action: str, times: int | None = 1, delay_ms: int = DEFAULT_DELAY_MS,
    scope: str = "",
) -> None:
    """Arm `point` to do `action` the next `times` passes (None: every pass)."""
    check_point(point)
    check_action(action)
    try:
        if times is not None:
            times = validate.integer(times, **TIMES)
        delay_ms = validate.integer(delay_ms, **DELAY_MS)
    except validate.Invalid as e:
        raise FaultError(str(e)) from None
    if not enabled():
        raise FaultError(FAULTS_DISABLED)
    with side_cursor() as cur:
        cur.execute(
            """
            INSERT INTO faults_fault (point, scope, action, remaining, delay_ms, fired, armed_at)
            VALUES (%s, %s, %s, %s, %s, 0, now())
            ON CONFLICT (point, scope) DO UPDATE
               SET action = EXCLUDED.action, remaining = EXCLUDED.remaining,
                   delay_ms = EXCLUDED.delay_ms, armed_at = now()
            """,
            [point, scope, action, times, delay_ms],
        )


def disarm(*, point: str, scope: str = "") -> bool:
    """Disarm `point`. True if it was armed."""
    check_point(point)
    with side_cursor() as cur:
        cur.execute(
            "UPDATE faults_fault SET action = '' WHERE point = %s AND scope = %s "
            "AND action <> '' AND (remaining IS NULL OR remaining > 0)",
            [point, scope],
        )
        return cur.rowcount > 0


def disarm_all() -> int:
    """Disarm every point, global and per job. Returns how many were armed."""
    with side_cursor() as cur:
        cur.execute(
            "UPDATE faults_fault SET action = '' WHERE action <> '' "
            "AND (remaining IS NULL OR remaining > 0)"
        )
        return cur.rowcount


def sync_points() -> None:
    """Make sure every declared point has its (global) row, so the admin lists them all."""
    with side_cursor() as cur:
        for point in POINTS:
            cur.execute(
                "INSERT INTO faults_fault (point, scope, action, delay_ms, fired) "
                "VALUES (%s, '', '', 1000, 0) ON CONFLICT (point, scope) DO NOTHING",
                [point],
            )
