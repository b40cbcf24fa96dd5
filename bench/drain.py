"""Where a pgbroker cluster's time goes: one `qcluster` (2 workers) drains DRAIN_N trivial jobs
queued beforehand, DRAIN_RUNS times, each after a VACUUM. Per run: jobs/s, how busy the machine
was, PostgreSQL's CPU per job (every postgres process), and each cluster process's CPU seconds.

    python -m bench.drain          (the project's PostgreSQL and Redis running: make db-start)

On a scratch database `reliable_drain` (dropped and created anew, dropped at the end). The
figures of docs/benchmarks.md, "Where the time goes".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from devtools.local_redis import default_redis_url, with_db
from experiments.scratch import scratch_database

N = int(os.environ.get("DRAIN_N", "30000"))
RUNS = int(os.environ.get("DRAIN_RUNS", "3"))
QUEUE = "drain"
TICK = os.sysconf("SC_CLK_TCK")

URL = scratch_database("reliable_drain")
os.environ.setdefault("REDIS_URL", with_db(default_redis_url(), 14))
os.environ.update(DATABASE_URL=URL, DJANGO_SETTINGS_MODULE="project.settings",
                  FAULTS_ENABLED="0", LOG_LEVEL="WARNING")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django_q.tasks import async_task  # noqa: E402

from devtools.processes import stop_pid  # noqa: E402
from pgbroker.broker import PostgresBroker, batched_enqueue  # noqa: E402

BASE_DIR = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def postgres_seconds() -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if "(postgres)" in (entry / "stat").read_text():
                    total += cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


def machine() -> tuple[int, int]:
    """Jiffies in all, and idle (with iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values), values[3] + values[4]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def waiting() -> int:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pgbroker_job WHERE queue = %s", [QUEUE])
        return int(cur.fetchone()[0])


def registered() -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pgbroker_cluster WHERE queue = %s", [QUEUE])
        return bool(cur.fetchone()[0])


def one_run() -> str:
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE pgbroker_job")
        cur.execute("VACUUM ANALYZE django_q_task")
    env = dict(os.environ, Q_CLUSTER_NAME=QUEUE, Q_WORKERS="2", Q_RECYCLE="1000000")
    cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=BASE_DIR, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        while not registered():  # its dispatcher is up and idle
            time.sleep(0.05)
        broker = PostgresBroker(list_key=QUEUE)
        with transaction.atomic(), batched_enqueue():
            for i in range(N):
                async_task("math.floor", i, broker=broker)
        before, pg_before, t0 = machine(), postgres_seconds(), time.monotonic()
        while waiting():
            time.sleep(0.02)
        seconds = time.monotonic() - t0
        after, pg_after = machine(), postgres_seconds()
        busy = 1 - (after[1] - before[1]) / (after[0] - before[0])
        dispatcher = children(cluster.pid)[0]
        workers = " ".join(f"{cpu_seconds(w):.2f}" for w in children(dispatcher))
        return (f"{N / seconds:,.0f} jobs/s; machine busy {busy:.0%}; PostgreSQL "
                f"{(pg_after - pg_before) / N * 1e6:.0f} us of CPU per job; CPU s: dispatcher "
                f"{cpu_seconds(dispatcher):.2f}, workers {workers} (their start-up included)")
    finally:
        stop_pid(cluster.pid, grace=30, name="qcluster", wait=cluster.wait)


def main() -> None:
    call_command("migrate", verbosity=0)
    print(f"one qcluster, 2 workers, draining {N:,} trivial jobs queued beforehand, "
          f"{RUNS} runs", flush=True)
    try:
        for _ in range(RUNS):
            print(f"  {one_run()}", flush=True)
    finally:
        connection.close()
        scratch_database("reliable_drain", drop_only=True)


if __name__ == "__main__":
    main()
