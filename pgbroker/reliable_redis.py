"""A Redis broker whose jobs survive the death of whoever took them (reliable fetch).

django-q2's Redis broker pops a job (`BLPOP`) and then holds it only in a process's memory: a
worker or a cluster killed with jobs in hand loses them. With this broker, pgbroker's cluster
(`manage.py qcluster`) takes jobs differently:

- **taking moves**: a job goes atomically from the queue into the cluster's own in-flight list
  (a Lua script for a batch, `BLMOVE` to wait for the next one), never only into memory;
- **a job leaves the in-flight list only once its result is recorded** (the result row is
  committed in PostgreSQL, then the job is removed, for a whole batch in one round trip);
- **a cluster proves it is alive** with a key that expires ALIVE_MS after its last renewal
  (renewed every RENEW seconds); every live cluster looks at the others every SWEEP seconds
  and moves the in-flight jobs of one whose key has expired back to the head of the queue;
- **a worker that dies running a job** gives it back at once (its own cluster sees it die),
  counting an attempt; a job that killed its worker `max_attempts` times is parked (kept in
  a list of its own, with the reason), not run again;
- **a cluster that cannot renew its key** stops its busy workers (FENCE seconds after its last
  renewal, before the key can expire), so a cluster cut off from Redis does not go on running
  jobs another cluster is about to take back.

Delivery is at least once: a job whose cluster died after running it and before removing it
runs again. Producers are unchanged (`RPUSH` onto the queue, as django-q2's Redis broker
does), and so is everything a person reads: `LLEN` of the queue, the clusters' stats.

Keys, beside the queue `<list_key>` (django-q2's `django_q:<name>:q`), each starting with it:
`:inflight:<owner>` (list), `:alive:<owner>` (string, expires), `:clusters` (set of owners),
`:swept:<owner>` (an hour's marker: that cluster's jobs were moved back), `:attempts` (hash:
sha1 of a package -> workers it killed), `:parked` (list of JSON: package, why, when).
Only commands a managed Redis allows are used (no KEYS, no CONFIG); one Redis server (or
primary), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

import redis
from django_q.brokers.redis_broker import Redis

# The order, as pgbroker.timing's for PostgreSQL: a cluster that cannot renew its key stops its
# busy workers at FENCE (+ the fence's WATCH, 0.1 s), well before its key expires at ALIVE_MS
# after its last renewal (MARGIN for a loaded machine); the others move its jobs back by
# ALIVE_MS + SWEEP, and run them at once: within 2 s of a SIGKILL.
ALIVE_MS = 1200  # a cluster's key lives this long unless renewed
RENEW = 0.15  # seconds between renewals (eight chances before the key expires)
FENCE = 0.6  # seconds without a renewal: stop busy workers
SWEEP = 0.2  # seconds between looks at the other clusters
MARGIN = 0.5
SWEPT_TTL = 3600  # seconds the "moved back" marker of a dead cluster is kept
WAIT = 1  # seconds one BLMOVE waits for a job before it is sent again
assert FENCE + 0.1 + MARGIN <= ALIVE_MS / 1000, "a cut-off cluster stops before its key expires"

# KEYS: queue, inflight, clusters, attempts. ARGV: n, owner.
# Returns {packages..., then one attempt count per package (0 if none)}.
TAKE = """
local n = tonumber(ARGV[1])
local items = redis.call('LRANGE', KEYS[1], 0, n - 1)
if #items == 0 then return {} end
redis.call('LTRIM', KEYS[1], #items, -1)
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('SADD', KEYS[3], ARGV[2])
local counted = redis.call('EXISTS', KEYS[4]) == 1
local out = {}
for i = 1, #items do out[i] = items[i] end
for i = 1, #items do
  local a = 0
  if counted then a = tonumber(redis.call('HGET', KEYS[4], redis.sha1hex(items[i])) or 0) end
  out[#items + i] = a
end
return out
"""

# KEYS: inflight, attempts. ARGV: the packages whose result is recorded.
ACK = """
local counted = redis.call('EXISTS', KEYS[2]) == 1
for i = 1, #ARGV do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 and counted then
    redis.call('HDEL', KEYS[2], redis.sha1hex(ARGV[i]))
  end
end
return #ARGV
"""

# KEYS: inflight, queue, attempts. ARGV: count (1: its worker died running it), packages...
# Back to the head of the queue, in their order, only if still ours (a cluster that was
# presumed dead must not put a second copy of a job already moved back).
BACK = """
local n = 0
for i = #ARGV, 2, -1 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[3], redis.sha1hex(ARGV[i]), 1) end
    redis.call('LPUSH', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
"""

# KEYS: inflight, parked, attempts. ARGV: package, record, package, record, ...
PARK = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
    redis.call('HDEL', KEYS[3], redis.sha1hex(ARGV[i]))
    n = n + 1
  end
end
return n
"""

# KEYS: alive, swept, clusters. ARGV: owner, ms, who.
# 1: renewed; 0: it had expired but nobody moved our jobs back (registered again);
# -1: another cluster moved our in-flight jobs back (registered again, the marker removed).
RENEW_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2], 'XX') then return 1 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
if redis.call('DEL', KEYS[2]) == 1 then return -1 end
return 0
"""

# KEYS: alive, inflight, queue, clusters, swept. ARGV: owner, swept_ttl, force.
# A cluster whose key has expired (or, force, this cluster stopping): its in-flight jobs back
# to the head of the queue, oldest first; it leaves the set. -1: it is alive after all.
RECLAIM = """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local n = 0
while true do
  local item = redis.call('RPOP', KEYS[2])
  if not item then break end
  redis.call('LPUSH', KEYS[3], item)
  n = n + 1
end
redis.call('SREM', KEYS[4], ARGV[1])
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[5], '1', 'EX', ARGV[2])
end
return n
"""


def digest(package: bytes) -> str:
    """The key of a package's attempt count (Lua's redis.sha1hex of the same bytes)."""
    return hashlib.sha1(package).hexdigest()  # noqa: S324 - a name, not a signature


class ReliableRedis(Redis):  # type: ignore[misc]
    """django-q2's Redis broker for producers (enqueue is its `RPUSH`) and, under pgbroker's
    `qcluster`, reliable fetch (pgbroker.cluster.redisfetch). django-q2's own cluster would
    still `BLPOP`: run this broker's jobs with pgbroker's `qcluster`."""

    reliable_fetch = True  # pgbroker's dispatcher takes from it through a RedisFetch

    def fetch(self, owner: int) -> RedisFetch:
        return RedisFetch(self.connection, self.list_key, owner)

    def in_flight(self) -> list[bytes]:
        """Every job a live or not yet swept cluster has taken and not finished."""
        return RedisFetch(self.connection, self.list_key, 0).all_in_flight()

    def parked(self) -> list[dict[str, Any]]:
        """Jobs given up on: {package, why, at, cluster}, oldest first."""
        return [json.loads(r) for r in self.connection.lrange(f"{self.list_key}:parked", 0, -1)]

    def parked_count(self) -> int:
        return int(self.connection.llen(f"{self.list_key}:parked"))


class RedisFetch:
    """The Redis side of one cluster: its keys and the scripts that move jobs between them."""

    def __init__(self, conn: redis.Redis, queue: str, owner: int) -> None:
        self.conn = conn
        self.queue = queue
        self.owner = owner
        self.inflight = self.inflight_of(owner)
        self.alive = f"{queue}:alive:{owner:x}"
        self.clusters = f"{queue}:clusters"
        self.attempts = f"{queue}:attempts"
        self.parked = f"{queue}:parked"
        self.swept = f"{queue}:swept:{owner:x}"
        self._take = conn.register_script(TAKE)
        self._ack = conn.register_script(ACK)
        self._back = conn.register_script(BACK)
        self._park = conn.register_script(PARK)
        self._renew = conn.register_script(RENEW_SCRIPT)
        self._reclaim = conn.register_script(RECLAIM)

    def inflight_of(self, owner: int) -> str:
        return f"{self.queue}:inflight:{owner:x}"

    def with_connection(self, conn: redis.Redis) -> RedisFetch:
        """The same cluster's keys on another connection (one per thread that blocks)."""
        return RedisFetch(conn, self.queue, self.owner)

    # --- taking ---------------------------------------------------------------------------

    def take(self, n: int) -> list[tuple[bytes, int]]:
        """Up to `n` jobs from the head of the queue into our in-flight list, each with the
        number of workers it has killed so far."""
        out = self._take(keys=[self.queue, self.inflight, self.clusters, self.attempts],
                         args=[n, f"{self.owner:x}"])
        half = len(out) // 2
        return list(zip(out[:half], (int(a) for a in out[half:]), strict=True))

    def wait_one(self, timeout: float) -> bytes | None:
        """Block until a job comes (BLMOVE into our in-flight list), or `timeout` passes."""
        item = self.conn.execute_command(  # type: ignore[no-untyped-call]  # (a float timeout)
            "BLMOVE", self.queue, self.inflight, "LEFT", "RIGHT", timeout)
        return None if item is None else as_bytes(item)

    def attempts_of(self, packages: Sequence[bytes]) -> list[int]:
        if not packages:
            return []
        counts = self.conn.hmget(self.attempts, [digest(p) for p in packages])
        return [int(c or 0) for c in counts]

    # --- settling -------------------------------------------------------------------------

    def settle(self, *, acked: Sequence[bytes], back: Sequence[bytes],
               died: Sequence[bytes], parked: Sequence[tuple[bytes, str]]) -> None:
        """One round trip: recorded jobs leave the in-flight list; jobs handed back (unstarted)
        and jobs whose worker died (an attempt counted) return to the head of the queue;
        parked jobs move to the parked list."""
        pipe = self.conn.pipeline(transaction=False)
        if acked:
            self._ack(keys=[self.inflight, self.attempts], args=list(acked), client=pipe)
        if back:
            self._back(keys=[self.inflight, self.queue, self.attempts], args=["0", *back],
                       client=pipe)
        if died:
            self._back(keys=[self.inflight, self.queue, self.attempts], args=["1", *died],
                       client=pipe)
        if parked:
            args: list[bytes | str] = []
            for package, why in parked:
                args += [package, json.dumps({"package": package.decode("latin-1"), "why": why,
                                              "at": time.time(), "cluster": f"{self.owner:x}"})]
            self._park(keys=[self.inflight, self.parked, self.attempts], args=args, client=pipe)
        pipe.execute()

    def mine(self) -> set[bytes]:
        """What our in-flight list holds now."""
        return {as_bytes(p) for p in self.conn.lrange(self.inflight, 0, -1)}

    # --- liveness -------------------------------------------------------------------------

    def renew(self, who: str) -> int:
        """1: renewed; 0: registered again after an expiry nobody acted on; -1: our jobs were
        moved back by another cluster meanwhile."""
        return int(self._renew(keys=[self.alive, self.swept, self.clusters],
                               args=[f"{self.owner:x}", ALIVE_MS, who]))

    def sweep(self) -> dict[str, int]:
        """Move back the in-flight jobs of every cluster whose key has expired: {owner: jobs}."""
        moved = {}
        for raw in self.conn.smembers(self.clusters):
            owner = as_bytes(raw).decode()
            if owner == f"{self.owner:x}" or self.conn.exists(f"{self.queue}:alive:{owner}"):
                continue
            n = int(self._reclaim(keys=[f"{self.queue}:alive:{owner}",
                                        f"{self.queue}:inflight:{owner}", self.queue,
                                        self.clusters, f"{self.queue}:swept:{owner}"],
                                  args=[owner, SWEPT_TTL, "0"]))
            if n >= 0:
                moved[owner] = n
        return moved

    def leave(self) -> int:
        """Stopping: whatever is still in our in-flight list goes back to the queue's head,
        and this cluster leaves the set."""
        return int(self._reclaim(keys=[self.alive, self.inflight, self.queue, self.clusters,
                                       self.swept], args=[f"{self.owner:x}", SWEPT_TTL, "1"]))

    def all_in_flight(self) -> list[bytes]:
        owners = [as_bytes(raw).decode() for raw in self.conn.smembers(self.clusters)]
        pipe = self.conn.pipeline(transaction=False)
        for owner in owners:
            pipe.lrange(f"{self.queue}:inflight:{owner}", 0, -1)
        return [p for packages in pipe.execute() for p in packages]


def as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
