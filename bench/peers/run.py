"""Peers benchmark: the job queues a Django team would pick instead of ours, measured the same way
on this machine (`.venv/bin/python -m bench.peers.run`).

Runs against a scratch database `reliable_peers` on the same PostgreSQL (dropped and created
anew), and for the queues on Redis against database 11 of the project's Redis (flushed by each),
with real worker processes (bench/peers/engines.py), and prints Markdown tables (the PostgreSQL
queues, then the Redis ones), also written to var/bench-peers.md. For each engine:

- throughput: the workers start and run three jobs (warm); PEERS_N jobs that do nothing are
  enqueued in one transaction; the clock runs from its commit until the queue is drained and
  the engine's own bookkeeping shows every job succeeded;
- latency: PEERS_LATENCY jobs, each enqueued in its own committed transaction with exponential
  gaps (mean 20 ms) while the workers idle; commit (time.time() right after it) -> body start;
- crash: a job that sleeps 10 s is SIGKILLed in its worker process (pid from its Execution row;
  a worker whose main process died is restarted at once, as a supervisor would); time from the
  kill until the body starts again, up to PEERS_CRASH_TIMEOUT s; PEERS_CRASH times.

Sizes: PEERS_N (10000), PEERS_LATENCY (200), PEERS_CRASH (5), PEERS_CRASH_TIMEOUT (60).
Selection: PEERS_ENGINES (comma-separated slugs, default all), PEERS_PARTS
(throughput,latency,crash), PEERS_OUT (var/bench-peers.md).
Quick run: PEERS_N=1000 PEERS_LATENCY=50 PEERS_CRASH=1 .venv/bin/python -m bench.peers.run
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(BASE_DIR))

from experiments.scratch import scratch_database  # noqa: E402

N = int(os.environ.get("PEERS_N", "10000"))
LATENCY_SAMPLES = int(os.environ.get("PEERS_LATENCY", "200"))
CRASHES = int(os.environ.get("PEERS_CRASH", "5"))
CRASH_TIMEOUT = float(os.environ.get("PEERS_CRASH_TIMEOUT", "60"))
CRASH_SLEEP = 10.0
MEAN_GAP = 0.020
PARTS = set(os.environ.get("PEERS_PARTS", "throughput,latency,crash").split(","))
OUT = Path(os.environ.get("PEERS_OUT", str(BASE_DIR / "var" / "bench-peers.md")))


os.environ.update(PEERS_DATABASE_URL=scratch_database("reliable_peers"),
                  DJANGO_SETTINGS_MODULE="bench.peers.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import DatabaseError, connection  # noqa: E402
from django.db.models import Count  # noqa: E402

from bench.peers.engines import ENGINES, Engine  # noqa: E402
from bench.peers.jobs.models import Execution  # noqa: E402


@dataclass
class Result:
    engine: Engine
    throughput: str = "-"
    enqueue: str = "-"
    p50: str = "-"
    p99: str = "-"
    crash: str = "-"
    duplicates: list[str] = field(default_factory=list)
    rate: float | None = None  # jobs/s, for the ratios
    latency: tuple[float, float] | None = None  # p50, p99 ms
    crash_seconds: float | None = None


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def reset() -> None:
    """Empty every table of the scratch database but Django's own bookkeeping (no worker runs)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                       "AND tablename NOT IN ('django_migrations', 'django_content_type')")
        tables = ", ".join(f'"{name}"' for (name,) in cursor.fetchall())
        cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def wait_for(predicate, timeout: float, interval: float = 0.02) -> float | None:
    """Seconds until `predicate()` held, or None after `timeout`."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(interval)
    return time.monotonic() - t0


def ran(keys_like: str) -> int:
    return Execution.objects.filter(job_key__startswith=keys_like).values("job_key").distinct() \
        .count()


def duplicated(prefix: str) -> int:
    """Job keys with more than one completed run."""
    return (Execution.objects.filter(job_key__startswith=prefix, finished_at__isnull=False)
            .values("job_key").annotate(runs=Count("id")).filter(runs__gt=1).count())


def start_and_warm_up(engine: Engine) -> None:
    """Start the workers and wait until they ran three jobs: they are up and consuming."""
    engine.start_workers()
    for i in range(3):
        engine.enqueue_one(f"warm-{i}")
    if wait_for(lambda: ran("warm-") == 3, timeout=60) is None:
        raise SystemExit(f"{engine.slug}: workers did not start (see var/log/peers-*.log)")
    time.sleep(1)


def bench_throughput(engine: Engine, result: Result) -> None:
    reset()
    engine.setup()
    start_and_warm_up(engine)  # a running, idle pool: the clock starts at the commit
    t0 = time.perf_counter()
    engine.enqueue_many(N, prefix="t")
    enq = time.perf_counter() - t0
    result.enqueue = f"{N / enq:,.0f}/s"
    t0 = time.monotonic()
    try:
        drained = wait_for(lambda: engine.pending() == 0, timeout=600, interval=0.02)
        total = time.monotonic() - t0
    finally:
        engine.stop()
    done = engine.succeeded()
    if drained is None or done != N:
        result.throughput = "timed out" if drained is None else f"{done} of {N} succeeded"
        say(f"  throughput: {result.throughput}")
        return
    result.throughput = f"{N / total:,.0f}"
    result.rate = N / total
    say(f"  throughput: {N / total:,.0f} jobs/s ({N} jobs that do nothing, committed at once "
        f"to running idle workers; {total:.2f} s until the queue was drained and {done} "
        f"recorded as succeeded); enqueue {result.enqueue} in one transaction")


def bench_latency(engine: Engine, result: Result) -> None:
    reset()
    engine.setup()
    start_and_warm_up(engine)
    committed: dict[str, float] = {}
    try:
        for i in range(LATENCY_SAMPLES):
            key = f"lat-{i}"
            engine.enqueue_one(key)
            committed[key] = time.time()
            time.sleep(random.expovariate(1 / MEAN_GAP))
        done = wait_for(lambda: ran("lat-") >= LATENCY_SAMPLES, timeout=120)
    finally:
        engine.stop()
    if done is None:
        result.p50 = result.p99 = "timed out"
        say(f"  latency: timed out ({ran('lat-')} of {LATENCY_SAMPLES} ran)")
        return
    first = {}
    for key, started in Execution.objects.filter(job_key__startswith="lat-") \
            .order_by("started_at").values_list("job_key", "started_at"):
        first.setdefault(key, started)
    samples = [(first[k] - committed[k]) * 1000 for k in committed]
    q = statistics.quantiles(samples, n=100, method="inclusive")
    result.p50, result.p99 = f"{q[49]:.1f}", f"{q[98]:.1f}"
    result.latency = (q[49], q[98])
    dups = duplicated("lat-")
    if dups:
        result.duplicates.append(f"latency {dups}")
    say(f"  latency: p50 {result.p50} ms, p99 {result.p99} ms, max {max(samples):.0f} ms "
        f"({LATENCY_SAMPLES} jobs, mean gap {MEAN_GAP * 1000:.0f} ms)")


def crash_once(engine: Engine, key: str) -> tuple[float | None, int]:
    """Seconds from SIGKILL to the body's next start (None: not within the timeout), and the
    number of completed runs of the job seen afterwards."""
    reset()
    engine.setup()
    start_and_warm_up(engine)
    try:
        engine.enqueue_one(key, sleep=CRASH_SLEEP)
        if wait_for(lambda: Execution.objects.filter(job_key=key).exists(), timeout=60) is None:
            raise SystemExit(f"{engine.slug}: the crash job never started")
        victim = Execution.objects.get(job_key=key)
        killed_at = time.time()
        restarted = engine.kill(victim.pid)
        again = wait_for(lambda: Execution.objects.filter(job_key=key).count() > 1,
                         timeout=engine.crash_timeout or CRASH_TIMEOUT, interval=0.02)
        if again is not None:  # let the redelivered run finish, and any further one show up
            wait_for(lambda: Execution.objects.filter(job_key=key, finished_at__isnull=False)
                     .exists(), timeout=CRASH_SLEEP + 20, interval=0.1)
            time.sleep(3)
    finally:
        engine.stop()
    rows = list(Execution.objects.filter(job_key=key).order_by("started_at"))
    completed = sum(r.finished_at is not None for r in rows)
    redelivery = rows[1].started_at - killed_at if len(rows) > 1 else None
    say(f"  crash: killed pid {victim.pid}{' (worker restarted)' if restarted else ''}; "
        + (f"body again after {redelivery:.1f} s in pid {rows[1].pid}" if redelivery is not None
           else f"no second run within {engine.crash_timeout or CRASH_TIMEOUT:.0f} s")
        + f"; runs {len(rows)}, completed {completed}")
    return redelivery, completed


def bench_crash(engine: Engine, result: Result) -> None:
    crashes = CRASHES if engine.crashes is None else min(engine.crashes, CRASHES)
    if not crashes:
        result.crash = "(as above)"
        return
    times, dups = [], 0
    for i in range(crashes):
        redelivery, completed = crash_once(engine, f"crash-{i}")
        if redelivery is not None:
            times.append(redelivery)
        dups += completed > 1
    timeout = engine.crash_timeout or CRASH_TIMEOUT
    if times:
        result.crash = f"{statistics.median(times):.2f} ({len(times)}/{crashes})"
        result.crash_seconds = statistics.median(times)
    elif engine.lost:  # never, by design: say why
        result.crash = f"lost: {engine.lost} (0/{crashes} in {timeout:.0f} s)"
    else:
        result.crash = f"none in {timeout:.0f} s (0/{crashes})"
    if len(times) < crashes and times:
        result.crash += f", {crashes - len(times)} none in {timeout:.0f} s"
    if dups:
        result.duplicates.append(f"crash {dups}/{crashes}")


def measure(engine: Engine, result: Result) -> None:
    if "throughput" in PARTS:
        bench_throughput(engine, result)
    if "latency" in PARTS:
        bench_latency(engine, result)
    if "crash" in PARTS:
        bench_crash(engine, result)


def wait_for_database(timeout: float = 120) -> None:
    def up() -> bool:
        connection.close()
        try:
            connection.ensure_connection()
        except DatabaseError:
            return False
        return True

    if wait_for(up, timeout=timeout, interval=1) is None:
        raise SystemExit("the database did not come back")


def table(results: list[Result]) -> str:
    """The PostgreSQL queues' table and ratios, then the Redis queues' (where any ran)."""
    postgres = [r for r in results if r.engine.store != "Redis"]
    on_redis = [r for r in results if r.engine.store == "Redis"]
    parts = [rows(postgres), ratios(results)] if postgres else []
    if on_redis:
        parts += ["**On Redis** (the queue in Redis, database 11 of the project's Redis on a unix "
                  "socket; job bodies, and django-q2's results, in PostgreSQL):",
                  rows(on_redis, enqueue="enqueue (staged, one RENAME)"),
                  redis_ratios(results)]
    return "\n\n".join(part for part in parts if part)


def rows(results: list[Result], *, enqueue: str = "enqueue (one txn)") -> str:
    lines = ["| engine | jobs/s | p50 ms | p99 ms | crash redelivery median s | duplicates "
             f"| {enqueue} |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        dups = ", ".join(r.duplicates) or "0"
        lines.append(f"| {r.engine.title} | {r.throughput} | {r.p50} | {r.p99} | {r.crash} "
                     f"| {dups} | {r.enqueue} |")
    return "\n".join(lines)


def ratio_row(ours: Result, name: str, other: Result | None, *,
              best_rate: float | None = None) -> str | None:
    """`ours` against `other`: a row of a ratios table (None without `other`)."""
    if other is None:
        return None
    rate = best_rate or other.rate
    cells = [f"{ours.rate / rate:.1f}x faster" if ours.rate and rate else "-"]
    for i in (0, 1):
        if ours.latency and other.latency:
            cells.append(f"{other.latency[i] / ours.latency[i]:.1f}x lower")
        else:
            cells.append("-")
    if ours.crash_seconds and other.crash_seconds:
        cells.append(f"{other.crash_seconds / ours.crash_seconds:.0f}x sooner")
    else:
        cells.append(f"{ours.crash_seconds:.2f} s vs {other.crash}" if ours.crash_seconds
                     else "-")
    return f"| {name} | " + " | ".join(cells) + " |"


def ratios(results: list[Result]) -> str:
    """This project's engine against stock django-q2 (bulk 1) and procrastinate's best."""
    ours = next((r for r in results if r.engine.slug == "pgbroker"), None)
    stock = next((r for r in results if r.engine.slug == "django-q2-bulk1"), None)
    runs = [r for r in results if r.engine.slug.startswith("procrastinate") and r.rate]
    if ours is None or not ours.rate:
        return ""
    lines = ["| pgbroker against | jobs/s | p50 latency | p99 latency | crash redelivery |",
             "|---|---|---|---|---|"]
    lines.append(ratio_row(ours, "django-q2 stock ORM broker (bulk 1)", stock) or "")
    if runs:
        best = max(runs, key=lambda r: r.rate)
        crash = next((r for r in runs if r.crash_seconds), best)
        merged = Result(best.engine, latency=min((r.latency for r in runs if r.latency),
                                                 default=None),
                        crash=crash.crash, crash_seconds=crash.crash_seconds, rate=best.rate)
        lines.append(ratio_row(ours, f"procrastinate, best of {len(runs)} (jobs/s "
                                     f"{best.engine.title[-14:]})", merged) or "")
    return "\n".join(line for line in lines if line)


def redis_ratios(results: list[Result]) -> str:
    """This project's Redis engine (slug `pgbroker-redis`, where it ran) against each other
    engine on Redis; nothing without it."""
    ours = next((r for r in results if r.engine.slug == "pgbroker-redis"), None)
    if ours is None or not ours.rate:
        return ""
    lines = ["| pgbroker-redis against | jobs/s | p50 latency | p99 latency | crash redelivery |",
             "|---|---|---|---|---|"]
    for other in results:
        if other.engine.store == "Redis" and other is not ours:
            lines.append(ratio_row(ours, other.engine.title, other) or "")
    return "\n".join(line for line in lines if line) if len(lines) > 2 else ""


def main() -> None:
    wanted = {s for s in os.environ.get("PEERS_ENGINES", "").split(",") if s}
    engines = [e for e in ENGINES if not wanted or e.slug in wanted]
    say(f"peers benchmark on {os.cpu_count()} cores: N={N}, latency={LATENCY_SAMPLES}, "
        f"crash={CRASHES} x up to {CRASH_TIMEOUT:.0f} s; engines: "
        f"{', '.join(e.slug for e in engines)}")
    call_command("migrate", verbosity=0)
    results: list[Result] = []
    loads = [os.getloadavg()[0]]
    try:
        for engine in engines:
            for attempt in (1, 2):
                say(f"{engine.title}")
                result = Result(engine)
                try:
                    measure(engine, result)
                    break
                except DatabaseError as exc:  # e.g. the server restarted under us: once more
                    say(f"  failed (attempt {attempt}): {exc!r}")
                    result.duplicates.append(f"run failed: {type(exc).__name__}")
                    engine.stop()
                    wait_for_database()
            results.append(result)
            loads.append(os.getloadavg()[0])
            write(results, loads)
    finally:
        for engine in engines:
            engine.stop()
    print("\n" + table(results), flush=True)
    print(f"\n(written to {OUT})", flush=True)
    connection.close()


def write(results: list[Result], loads: list[float]) -> None:
    """The table so far, to OUT (rewritten after each engine, so a broken run keeps its rows)."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    stores = ("PostgreSQL and Redis on unix sockets"
              if any(r.engine.store == "Redis" for r in results) else "PostgreSQL on a unix socket")
    OUT.write_text(
        f"Peers benchmark ({os.cpu_count()} cores, {stores}; N={N}, "
        f"latency samples={LATENCY_SAMPLES}, crashes={CRASHES}, crash timeout "
        f"{CRASH_TIMEOUT:.0f} s; 1-min load average before each engine and at the end: "
        f"{', '.join(f'{x:.2f}' for x in loads)}). jobs/s: from the commit of {N} jobs to "
        f"running, idle workers until all succeeded; crash: median "
        f"seconds from SIGKILL to the body's next start (redelivered/tried); duplicates: jobs "
        f"with two completed runs.\n\n{table(results)}\n")


if __name__ == "__main__":
    main()
