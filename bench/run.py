"""Benchmarks: how fast the mechanisms are on this machine (`make bench`).

Runs against a scratch database `reliable_bench` on the same PostgreSQL (dropped and created
anew), with real `qcluster` / `relay_outbox` processes, and prints a Markdown table.
Sizes: BENCH_N (default 1000) signups / messages / tasks, BENCH_SAGAS (default 2000).
BENCH_ONLY=sagas,latency (names of the bench_* functions) runs only those, and `make bench`
then skips the peers.
"""

from __future__ import annotations

import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.report import write_table  # noqa: E402
from devtools.local_redis import default_redis_url, with_db  # noqa: E402
from experiments.scratch import scratch_database  # noqa: E402

N = int(os.environ.get("BENCH_N", "1000"))
SAGAS = int(os.environ.get("BENCH_SAGAS", "2000"))
LATENCY_SAMPLES = int(os.environ.get("BENCH_LATENCY", "100"))


URL = scratch_database("reliable_bench")
# Redis database 14 of the project-local server: a running demo's queue (0) is left alone.
os.environ.setdefault("REDIS_URL", with_db(default_redis_url(), 14))
# DEBUG off, as in production (with it on, Django keeps every query in memory); the
# processes it starts (clusters, relays) inherit it
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("ALLOWED_HOSTS", "localhost")
os.environ.update(DATABASE_URL=URL, DJANGO_SETTINGS_MODULE="project.settings",
                  FAULTS_ENABLED="0", LOG_LEVEL="WARNING", DEBUG="0",
                  EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django_q.models import Task  # noqa: E402

from devtools.processes import stop_pid  # noqa: E402
from jobs.queues import Store, enqueue  # noqa: E402
from jobs.selectors import queue_drained, redis_queued_tasks  # noqa: E402
from outbox.models import OutboxMessage  # noqa: E402
from outbox.services import publish, relay_outbox  # noqa: E402
from sagas.models import Saga, State  # noqa: E402
from sagas.services import start_trip  # noqa: E402
from users.models import EmailSend  # noqa: E402
from users.services import create_user  # noqa: E402

ROWS: list[tuple[str, str, str]] = []


def record(what: str, value: str, how: str) -> None:
    ROWS.append((what, value, how))
    print(f"  {what}: {value}", flush=True)


def reset() -> None:
    from jobs.queues import redis_queue

    call_command("flush", interactive=False, verbosity=0)
    redis_queue().connection.flushdb()


def start(*args: str) -> subprocess.Popen:
    log = open(BASE_DIR / "var" / "log" / f"bench-{args[0]}.log", "ab")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=BASE_DIR, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    stop_pid(proc.pid, grace=60, name="bench process", wait=proc.wait)


def wait_for(predicate, timeout: float = 600, interval: float = 0.02) -> float:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise SystemExit("benchmark timed out")
        time.sleep(interval)
    return time.monotonic() - t0


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s ({n} in {seconds:.2f} s)"


def bench_signups() -> None:
    for mode in ("dual-write", "outbox", "que"):
        reset()
        t0 = time.perf_counter()
        for i in range(N):
            create_user(name=f"{mode}-{i}", mode=mode)
        record(f"signup, `{mode}` (create_user in one process)", rate(N, time.perf_counter() - t0),
               "user row + email job or outbox row, committed")


def bench_relay() -> None:
    reset()
    with transaction.atomic():
        for i in range(N):
            publish(topic="user.welcome_email", payload={"user_id": i + 1})
    t0 = time.perf_counter()
    result = relay_outbox(batch=100)
    assert result.published == N
    record("outbox relay, one process, batch 100", rate(N, time.perf_counter() - t0),
           "claim (SKIP LOCKED) + one RPUSH of the batch's jobs to Redis + mark published")
    reset()
    with transaction.atomic():
        for i in range(N):
            publish(topic="user.welcome_email", payload={"user_id": i + 1})
    t0 = time.monotonic()
    relays = [start("relay_outbox", "--once", "--batch", "50") for _ in range(2)]
    for p in relays:
        p.wait()
    seconds = time.monotonic() - t0
    assert OutboxMessage.objects.filter(published_at__isnull=False).count() == N
    assert len(redis_queued_tasks()) == N
    record("outbox relay, two processes at once", rate(N, seconds),
           "wall time including process start; each message published once")


def bench_drain() -> None:
    """Signups in que mode with the cluster stopped, then time the cluster sending them all."""
    reset()
    for i in range(N):
        create_user(name=f"q-{i}", mode="que")
    connection.close()
    cluster = start("qcluster")
    try:
        seconds = wait_for(lambda: EmailSend.objects.count() == N)
        acked = wait_for(queue_drained)
    finally:
        stop(cluster)
    record("welcome emails sent by one qcluster (2 workers)", rate(N, seconds),
           "idempotent send: lock user, insert EmailSend, send, commit")
    record("... until every task is acknowledged", rate(N, seconds + acked),
           "results and acknowledgements written in batches")


def start_redis_cluster() -> subprocess.Popen:
    log = open(BASE_DIR / "var" / "log" / "bench-qcluster-redis.log", "ab")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=BASE_DIR, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "Q_CLUSTER_NAME": "redis"})


def bench_redis() -> None:
    """The two clusters side by side: the same jobs, queued beforehand, drained by one
    PostgreSQL cluster and by one Redis cluster (2 workers each)."""
    from jobs.queues import redis_batch
    from outbox.services import relay_outbox
    from pgbroker.broker import batched_enqueue

    jobs = N * 5
    for store in ("PostgreSQL", "Redis"):
        reset()
        if store == "PostgreSQL":
            with transaction.atomic(), batched_enqueue():
                for _ in range(jobs):
                    enqueue(store=Store.POSTGRES, func="time.time")
        else:
            batch = redis_batch()
            for _ in range(jobs):
                batch.add("time.time")
            batch.push()
        connection.close()
        cluster = start("qcluster") if store == "PostgreSQL" else start_redis_cluster()
        try:
            seconds = wait_for(lambda: Task.objects.count() == jobs, interval=0.05)
        finally:
            stop(cluster)
        record(f"{jobs:,} no-op jobs run by one {store} cluster", rate(jobs, seconds),
               "queued beforehand; until every result row is written; includes cluster start")
    reset()
    for i in range(N):
        create_user(name=f"o-{i}", mode="outbox")
    relay_outbox()
    connection.close()
    cluster = start_redis_cluster()
    try:
        seconds = wait_for(lambda: EmailSend.objects.count() == N)
    finally:
        stop(cluster)
    record("welcome emails sent by one Redis cluster (2 workers)", rate(N, seconds),
           "outbox signups relayed into Redis beforehand; the same idempotent send as above")


def bench_latency() -> None:
    """Time from a committed signup to its EmailSend row, with everything running."""
    reset()
    connection.close()
    started = [start("qcluster"), start("relay_outbox", "--follow"), start_redis_cluster()]
    try:
        time.sleep(3)
        for mode in ("que", "outbox", "dual-write"):
            samples = []
            for i in range(LATENCY_SAMPLES):
                user = create_user(name=f"lat-{mode}-{i}", mode=mode)
                t0 = time.monotonic()
                wait_for(lambda u=user: EmailSend.objects.filter(user=u).exists(), timeout=30,
                         interval=0.002)
                samples.append((time.monotonic() - t0) * 1000)
                time.sleep(random.expovariate(1 / 0.05))  # arrivals at random poll phases
            q = statistics.quantiles(samples, n=100)
            record(f"signup commit -> email sent, `{mode}`",
                   f"p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms",
                   f"{LATENCY_SAMPLES} signups one at a time, random gaps; "
                   + {"que": "the PostgreSQL cluster woken by NOTIFY",
                      "outbox": "the relay woken by NOTIFY, then the Redis cluster's BLMOVE",
                      "dual-write": "RPUSH after the commit, the Redis cluster's BLMOVE"}[mode])
    finally:
        for p in started:
            stop(p)


def bench_sagas() -> None:
    """Trip sagas in each style: orchestrated (a coordinator job per saga) and choreographed
    (each service reacts to the event before it: the relay carries the events)."""
    from sagas.models import Style

    for style in Style:
        helpers = [] if style == Style.ORCHESTRATED else [("relay_outbox", "--follow")]
        reset()
        started = [start("qcluster"), *(start(*h) for h in helpers)]
        try:
            time.sleep(3)
            t0 = time.monotonic()
            for i in range(SAGAS):
                start_trip(customer=f"c{i}", style=style)
            wait_for(lambda: Saga.objects.filter(state=State.COMPLETED).count() == SAGAS)
            seconds = time.monotonic() - t0
        finally:
            for proc in started:
                stop(proc)
        record(f"{style} trip sagas started (one process) while they complete",
               rate(SAGAS, seconds), "everything on the same 2 cores; 3 steps, 8 log events"
               + ("" if style == Style.ORCHESTRATED else "; the relay carries the events"))
        reset()
        for i in range(SAGAS):
            start_trip(customer=f"c{i}", style=style)
        before = transactions()
        connection.close()
        started = [start("qcluster"), *(start(*h) for h in helpers)]
        try:
            wait_for(lambda: Saga.objects.filter(state=State.COMPLETED).count() == SAGAS)
        finally:
            for proc in started:
                stop(proc)
        seconds = log_span()
        per_saga = (transactions() - before) / SAGAS
        record(f"{style} trip sagas completed (started beforehand)", rate(SAGAS, seconds),
               "from the first step started to the last saga ended, by the saga log's times; "
               "one qcluster" + ("" if style == Style.ORCHESTRATED else " and one relay")
               + f"; {per_saga:.1f} transactions per saga, everything counted")


def transactions() -> int:
    """Transactions committed in this database so far (pg_stat_database: read-only statements
    in autocommit count too; a backend reports its own when it is idle or exits)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_force_next_flush()")
        cur.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return int(cur.fetchone()[0])


def log_span() -> float:
    """Seconds from the first STEP_START to the last SAGA_END, as the saga log recorded them
    (the database's clock): the same window for both styles, whatever ran before the first
    saga ended (a choreographed run is well advanced by then)."""
    from django.db.models import Max, Min

    from sagas.models import SagaLog

    first = SagaLog.objects.filter(event="STEP_START").aggregate(t=Min("at"))["t"]
    last = SagaLog.objects.filter(event="SAGA_END").aggregate(t=Max("at"))["t"]
    return (last - first).total_seconds()


def bench_wakeup() -> None:
    """8 producers with and without the wake-up, a cluster consuming (bench/wakeup.py)."""
    from bench import wakeup

    reset()
    wakeup.run(record)
    connection.close()
    cluster = start("qcluster")
    try:
        time.sleep(3)
        rate, idle = wakeup.idle_fraction()
    finally:
        stop(cluster)
    record("8 producers on pgbroker, a real cluster consuming",
           f"{rate:,.0f} commits/s; the cluster idle {idle:.0%} of the time",
           "producers NOTIFY only while it is idle; slower than above because the cluster "
           "takes CPU from them on 2 cores")


def main() -> None:
    print(f"benchmarking on {os.cpu_count()} cores, N={N}, sagas={SAGAS}", flush=True)
    call_command("migrate", verbosity=0)
    (BASE_DIR / "var" / "log").mkdir(parents=True, exist_ok=True)
    only = {n.strip() for n in os.environ.get("BENCH_ONLY", "").split(",") if n.strip()}
    benches = {"signups": bench_signups, "relay": bench_relay, "drain": bench_drain,
               "redis": bench_redis, "latency": bench_latency, "sagas": bench_sagas,
               "wakeup": bench_wakeup}
    unknown = only - benches.keys()
    if unknown:
        sys.exit(f"BENCH_ONLY: unknown {', '.join(sorted(unknown))}; use {', '.join(benches)}")
    for name, bench in benches.items():
        if not only or name in only:
            bench()
            assert Task.objects.filter(success=False).count() == 0, f"{name}: failed tasks"
    write_table(ROWS, "bench.md")
    connection.close()


if __name__ == "__main__":
    main()
