"""What waking the cluster costs producers: 8 processes enqueue as fast as they can (one job
per transaction, through async_task), with no consumer taking CPU from them, and each wake-up:
none (a plain INSERT), NOTIFY in every producer transaction, and pgbroker's (NOTIFY only while
a cluster of the queue is idle), with the cluster row busy (the steady state under load) and
idle (every commit notifies: the worst case). Rounds are interleaved so drift hits every mode
alike. `idle_fraction()` then measures how often a real cluster consuming 8 producers' jobs is
idle, that is how often producers pay for NOTIFY in practice.

    python -m bench.wakeup            (run by `make bench`; BENCH_WAKEUP_SECONDS, _ROUNDS)
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time

from django.db import connection, connections, transaction
from django_q.tasks import async_task

from pgbroker.broker import PostgresBroker

PRODUCERS = 8
SECONDS = float(os.environ.get("BENCH_WAKEUP_SECONDS", "4"))
ROUNDS = int(os.environ.get("BENCH_WAKEUP_ROUNDS", "3"))


class PlainInsert(PostgresBroker):
    """No wake-up at all: the cluster would have to poll."""

    def enqueue(self, task: str) -> int:
        with connection.cursor() as cur:
            cur.execute("INSERT INTO pgbroker_job (queue, payload) VALUES (%s, %s) RETURNING id",
                        [self.list_key, task])
            return cur.fetchone()[0]


class NotifyEveryCommit(PlainInsert):
    """The textbook wake-up: NOTIFY in every producer transaction."""

    def enqueue(self, task: str) -> int:
        job_id = super().enqueue(task)
        with connection.cursor() as cur:
            cur.execute("SELECT pg_notify('pgbroker', %s)", [self.list_key])
        return job_id


BUSY, IDLE = "pgbroker, its cluster busy", "pgbroker, its cluster idle (worst case)"
MODES = {"no wake-up": PlainInsert, "NOTIFY every commit": NotifyEveryCommit,
         BUSY: PostgresBroker, IDLE: PostgresBroker}
FAKE_OWNER = -1  # a cluster row no dispatcher owns: only its idle flag matters here


def _produce(mode: str, seconds: float, out) -> None:
    connections.close_all()
    broker = MODES[mode]()
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with transaction.atomic():
            async_task("math.floor", 1.5, broker=broker)
        n += 1
    connections.close_all()
    out.put(n)


def _cluster_row(idle: bool | None) -> None:
    with connection.cursor() as cur:
        cur.execute("DELETE FROM pgbroker_cluster WHERE owner = %s", [FAKE_OWNER])
        if idle is not None:
            cur.execute("INSERT INTO pgbroker_cluster (owner, queue, host, pid, idle, workers) "
                        "VALUES (%s, %s, 'bench', 0, %s, '[]')",
                        [FAKE_OWNER, PostgresBroker().list_key, idle])


def _producers(mode: str, seconds: float) -> float:
    """Commits per second of PRODUCERS processes enqueuing with `mode` for `seconds`."""
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    producers = [ctx.Process(target=_produce, args=(mode, seconds, out)) for _ in range(PRODUCERS)]
    for p in producers:
        p.start()
    total = sum(out.get() for _ in producers)
    for p in producers:
        p.join()
    return total / seconds


def measure(mode: str, seconds: float = SECONDS) -> float:
    _cluster_row({BUSY: False, IDLE: True}.get(mode))
    rate = _producers(mode, seconds)
    _cluster_row(None)
    with connection.cursor() as cur:
        cur.execute("TRUNCATE pgbroker_job")
    return rate


def idle_fraction(seconds: float = SECONDS) -> tuple[float, float]:
    """With a real cluster running (the caller starts it): 8 producers on pgbroker, the
    cluster's idle flag sampled every 5 ms. Returns (commits/s, fraction of samples idle)."""
    import threading

    samples: list[bool] = []
    done = threading.Event()

    def sample() -> None:
        with connections["default"].cursor() as cur:
            while not done.is_set():
                cur.execute("SELECT bool_or(idle) FROM pgbroker_cluster")
                samples.append(bool(cur.fetchone()[0]))
                time.sleep(0.005)
        connections["default"].close()

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        rate = _producers(BUSY, seconds)  # the real cluster's own row says idle or not
    finally:
        done.set()
        thread.join()
    return rate, sum(samples) / max(len(samples), 1)


def run(record) -> dict[str, float]:
    """Interleaved rounds of every mode; records the medians and returns them."""
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(ROUNDS):
        for mode in MODES:
            samples[mode].append(measure(mode))
    medians = {m: statistics.median(v) for m, v in samples.items()}
    base = medians["no wake-up"]
    for mode, value in medians.items():
        spread = f"{min(samples[mode]):,.0f}-{max(samples[mode]):,.0f}"
        record(f"8 producers, {mode}", f"{value:,.0f} commits/s ({value / base:.0%} of none)",
               f"median of {ROUNDS} interleaved {SECONDS:g} s rounds ({spread}); no consumer")
    return medians
