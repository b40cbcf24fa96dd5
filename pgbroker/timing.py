"""How fast a dead peer is noticed on each side of a connection, and in what order.

A cluster cut off from PostgreSQL (a partition: packets dropped, no reset) must stop its own
busy workers *before* another cluster may take their jobs back, or one job runs in two places
at once. Both sides are bounded here (standard library only: settings.py imports it):

- client side, every connection of this project (libpq): TCP keepalives and `tcp_user_timeout`
  (CLIENT_TIMEOUT_MS), so a call blocked on a dead peer fails instead of waiting out the
  kernel's retransmissions (about 15 minutes);
- server side, set per session by the client (`options=-c ...`, any role may): keepalives and
  `tcp_user_timeout` (SERVER_TIMEOUT_MS), so the server ends a cut-off session, and frees its
  advisory locks, in seconds rather than hours; `idle_in_transaction_session_timeout` frees
  the row locks of a session that stopped in the middle of a transaction;
- the dispatcher's fence: it stops its busy workers when it has had no successful round trip
  with the database for FENCE_SECONDS (a watchdog thread: a call blocked in the kernel does
  not blind it).

The order: a cut at time 0. The dispatcher talks to the database every TICK, so its last
round trip was before 0, and its workers are stopped by FENCE + WATCH at the latest. The
server heard from the host at most KEEPALIVE_IDLE before the cut (keepalive probes are
answered until then), so it ends the host's sessions at SERVER_TIMEOUT - KEEPALIVE_IDLE at
the earliest; another cluster takes the jobs back only after the key has been free for
GRACE. So the promise holds while

    FENCE + WATCH + MARGIN <= SERVER_TIMEOUT - KEEPALIVE_IDLE + GRACE

and a cut-off host's jobs run again elsewhere within

    SERVER_TIMEOUT + KEEPALIVE_INTERVAL + GRACE + TICK (+ a claim)

With the defaults: stopped by 2.6 s, taken back from 6 s on, running again by about 8.3 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TICK = 0.25  # the dispatcher's housekeeping: liveness sweep, heartbeat, reconnect
WATCH = 0.1  # how often the dispatcher's watchdog looks at its last round trip
GRACE = 1.0  # a dead owner's key must be seen free this long before its jobs are taken
MARGIN = 1.0  # scheduling delays the order must survive (a slow, loaded machine)
KEEPALIVE_IDLE = 1  # seconds of silence before the first keepalive probe, both sides
KEEPALIVE_INTERVAL = 1
KEEPALIVE_COUNT = 3


class TimingError(ValueError):
    """Timeouts that break the order (one line)."""


@dataclass(frozen=True)
class Timing:
    fence: float = 2.5  # seconds without a round trip: stop busy workers
    client_timeout_ms: int = 2000  # libpq tcp_user_timeout
    server_timeout_ms: int = 6000  # the server's tcp_user_timeout for our sessions
    idle_in_transaction_ms: int = 60_000
    statement_timeout_ms: int = 2000  # the dispatcher's own statements (never a job's)

    def __post_init__(self) -> None:
        latest_stop = self.fence + WATCH + MARGIN
        earliest_take = self.server_timeout_ms / 1000 - KEEPALIVE_IDLE + GRACE
        if latest_stop > earliest_take:
            raise TimingError(
                f"PGBROKER_FENCE_SECONDS ({self.fence:g}) must leave a cut-off cluster time to "
                f"stop its workers before its jobs can be taken back: at most "
                f"{earliest_take - WATCH - MARGIN:g} s with PGBROKER_SERVER_TIMEOUT_MS "
                f"{self.server_timeout_ms}")
        if self.client_timeout_ms > self.server_timeout_ms:
            raise TimingError(
                f"PGBROKER_CLIENT_TIMEOUT_MS ({self.client_timeout_ms}) must not exceed "
                f"PGBROKER_SERVER_TIMEOUT_MS ({self.server_timeout_ms}): the client notices first")

    @property
    def redelivery_bound(self) -> float:
        return self.server_timeout_ms / 1000 + KEEPALIVE_INTERVAL + GRACE + TICK

    def client_options(self) -> dict[str, Any]:
        """libpq's connection keywords: the client side, and the server side as `options`."""
        server = (f"-c tcp_keepalives_idle={KEEPALIVE_IDLE} "
                  f"-c tcp_keepalives_interval={KEEPALIVE_INTERVAL} "
                  f"-c tcp_keepalives_count={KEEPALIVE_COUNT} "
                  f"-c tcp_user_timeout={self.server_timeout_ms} "
                  f"-c idle_in_transaction_session_timeout={self.idle_in_transaction_ms}")
        return {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE,
                "keepalives_interval": KEEPALIVE_INTERVAL,
                "keepalives_count": KEEPALIVE_COUNT,
                "tcp_user_timeout": self.client_timeout_ms, "options": server}


def with_options(params: dict[str, Any], timing: Timing) -> dict[str, Any]:
    """`params` (libpq keywords) with the timeouts set where they are not set already; the
    server-side ones are added in front of any `options` given (a later -c wins)."""
    merged = dict(params)
    for key, value in timing.client_options().items():
        if key == "options":
            given = merged.get("options", "")
            merged["options"] = f"{value} {given}".strip()
        else:
            merged.setdefault(key, value)
    return merged
