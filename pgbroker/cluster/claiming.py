"""When the dispatcher looks for jobs, and how it goes to sleep without missing one.

Claiming costs a round trip; a NOTIFY per enqueue would serialise the producers' commits. So
producers wake only an idle cluster (the enqueue function reads the cluster's `idle` flag),
and a cluster may sleep only once no producer can still think it busy. The states:

    BUSY        jobs came with the last claim: claim again as soon as there is room
    SPINNING    the queue ran dry a moment ago: look again after SPIN_DOWN[n] (more may follow
                at once, and producers need not pay for a NOTIFY yet)
    CONFIRMING  the idle flag is set: wait until no enqueue that saw us busy is in flight
                (it holds a shared advisory lock until it commits), looking again with backoff
    LAST_LOOK   every producer from now on sees the flag: one last claim before sleeping
    ASLEEP      only a NOTIFY, a retry falling due (`run_at`) or our own hand-backs wake us

A claim that brings jobs goes back to BUSY from any state; the flag is cleared once those jobs
are dispatched. A NOTIFY or a wake() claims at once from any state.
"""

from __future__ import annotations

import enum
import time

from pgbroker.cluster.session import DispatcherSession

SPIN_DOWN = (0.0005, 0.001, 0.001, 0.001)  # seconds between looks after the queue ran dry
RECHECK_MAX = 0.1  # the longest wait between looks for in-flight enqueues


class Phase(enum.Enum):
    BUSY = "busy"
    SPINNING = "spinning"
    CONFIRMING = "confirming"
    LAST_LOOK = "last look"
    ASLEEP = "asleep"


class Claiming:
    def __init__(self, session: DispatcherSession) -> None:
        self.session = session
        self.phase = Phase.SPINNING
        self.spins = len(SPIN_DOWN)  # at start: no recent work, go idle at once
        self.flagged = False  # our `idle` flag as producers read it
        self.clear_flag = False  # jobs came while flagged: clear it after dispatching them
        self.look_at: float | None = None  # monotonic: when to claim again (None: now)
        self.backoff = 0.001  # CONFIRMING's wait between looks
        self.run_at: float | None = None  # monotonic: when the next delayed job is due

    def due(self, now: float) -> bool:
        """Should the dispatcher claim now (it has room and nothing buffered)?"""
        if self.session.woken or (self.run_at is not None and now >= self.run_at):
            return True
        if self.phase is Phase.ASLEEP:
            return False
        return self.look_at is None or now >= self.look_at

    def deadline(self) -> float | None:
        """The next moment a claim is due without any event (monotonic), if any."""
        times = [t for t in (self.look_at, self.run_at) if t is not None]
        return min(times) if times else None

    def claimed(self, n: int) -> None:
        """A claim returned `n` jobs: move on."""
        if n:
            self.phase = Phase.BUSY
            self.look_at = None
            self.backoff = 0.001
            self.spins = 0
            self.clear_flag = self.flagged
        elif self.spins < len(SPIN_DOWN):
            self.phase = Phase.SPINNING
            self.look_at = time.monotonic() + SPIN_DOWN[self.spins]
            self.spins += 1
        else:
            self._toward_sleep()

    def _toward_sleep(self) -> None:
        """The queue looked empty after spinning. Set the flag that makes producers wake us;
        then wait until no enqueue that saw us busy is still in flight, look one last time,
        and sleep. With the flag set already (confirmed before), sleep at once."""
        if not self.flagged:
            self.session.set_idle(True)
            self.flagged = True
            self.phase = Phase.CONFIRMING
        if self.phase is Phase.CONFIRMING:
            if not self.session.no_enqueue_in_flight():
                self.look_at = time.monotonic() + self.backoff
                self.backoff = min(self.backoff * 2, RECHECK_MAX)
                return
            self.phase = Phase.LAST_LOOK
            self.look_at = time.monotonic()
            return
        self.phase = Phase.ASLEEP
        self.look_at = None
        self.backoff = 0.001
        seconds = self.session.seconds_to_next_run()  # jobs waiting for a retry
        self.run_at = None if seconds is None else time.monotonic() + seconds

    def dispatched(self) -> None:
        """The jobs of the last claim are in workers: producers need not wake us now."""
        if self.clear_flag:
            self.clear_flag = False
            self.session.set_idle(False)
            self.flagged = False

    def wake(self) -> None:
        """Work may be there that no NOTIFY announces (our own hand-backs, taken-back jobs)."""
        if self.phase is Phase.ASLEEP:
            self.phase = Phase.SPINNING
        self.look_at = None

    def reconnected(self) -> None:
        """A new session: its flag is cleared (pgbroker_cluster.idle false); look at once."""
        self.flagged = self.clear_flag = False
        self.phase = Phase.SPINNING
        self.wake()
