"""Liveness instead of leases: a job is taken back when its cluster's sessions are gone, and a
cluster cut off from the database stops its own busy workers first (pgbroker.timing has the
order and the formula).

`Fence`: this cluster's watchdog. `Sweeper`: every cluster's look at the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from django_q.conf import logger

from pgbroker import history
from pgbroker.cluster.session import DispatcherSession
from pgbroker.cluster.sources import Workers
from pgbroker.timing import GRACE, WATCH


class Fence(threading.Thread):
    """In a thread of its own so that a call blocked on a dead peer cannot blind it: when no
    round trip with the store that holds this cluster's liveness (`what`: PostgreSQL, or Redis
    for a reliable Redis broker) has come back for `seconds` (`last_ok()`, monotonic), this
    cluster may be cut off, and its busy workers are stopped before another cluster may take
    their jobs."""

    def __init__(self, *, last_ok: Callable[[], float], seconds: float, workers: Workers,
                 what: str = "the database", prefix: str = "pg:") -> None:
        super().__init__(name="fence", daemon=True)
        self.last_ok = last_ok
        self.seconds = seconds
        self.workers = workers
        self.what = what
        self.prefix = prefix  # of a job's name in the history (pgbroker.history)

    def run(self) -> None:
        while not self.workers.stopping:
            time.sleep(WATCH)
            silent = time.monotonic() - self.last_ok()
            if silent < self.seconds:
                continue
            with self.workers.slots_lock:
                for slot in self.workers.slots:
                    if slot.running is None or slot.fenced or slot.process.exitcode is not None:
                        continue
                    logger.critical("no answer from %s for %.1f s: stopping worker %s (job %s) "
                                    "before another cluster may take it over", self.what,
                                    silent, slot.process.pid, slot.running.id)
                    slot.fenced = True
                    slot.kill()
                    # now, not when the loop (maybe blocked on the dead peer) notices it
                    history.record("died", f"{self.prefix}{slot.running.id}" if self.prefix
                                   else "", worker=slot.process.pid, how="stopped by the fence")


class Sweeper:
    """Finds clusters whose key nobody holds (every session of theirs ended) and, once the key
    has been free for GRACE, takes their jobs back. The grace lets a dispatcher whose
    connection merely broke reconnect and keep its jobs."""

    def __init__(self, session: DispatcherSession) -> None:
        self.session = session
        self.dead_seen: dict[int, float] = {}  # owner: when its key was first seen free

    def sweep(self, now: float) -> int:
        """Returns how many jobs were taken back."""
        taken = 0
        dead = self.session.dead_owners()
        for owner in list(self.dead_seen):
            if owner not in dead:
                del self.dead_seen[owner]  # alive again (it reconnected) or already gone
        for owner in dead:
            first = self.dead_seen.setdefault(owner, now)
            try:
                if now - first >= GRACE:
                    n = self.session.take_back(owner)
                    del self.dead_seen[owner]
                    if n:
                        logger.warning("took back %s job(s) of dead cluster %x", n, owner)
                        history.record("took_back", "", owner=f"{owner:x}", jobs=n)
                        taken += n
            finally:
                self.session.release_key(owner)
        return taken
