"""Liveness, not leases: real `qcluster` processes, real SIGKILLs, a real PostgreSQL restart.

Every job here appends "start"/"end" lines to a file and holds a per-job lock while it runs
(tests/pgbroker/tasks.py), so a job that runs twice at the same time is seen, not guessed.
The cluster's processes are its main process, one dispatcher (django-q2's pusher, monitor and
sentinel in one) and the workers; each is killed here, idle and busy.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_q.models import Success
from django_q.tasks import async_task

from common import sideconn
from devtools import local_postgres
from devtools.processes import children
from jobs.selectors import queue_drained, uses_pgbroker
from pgbroker.models import Cluster, Job
from tests.helpers import wait_until

RUN = "tests.pgbroker.tasks.run"
LIVENESS_BOUND = 2.0  # seconds: what the README promises
ORM_COMES_BACK = 10.0  # seconds: Q_BROKER=orm, no promise beyond "it comes back"

pgbroker_only = pytest.mark.skipif(
    not uses_pgbroker(),
    reason="liveness is the PostgreSQL broker's (Q_BROKER=orm: jobs return after the lease)")
pytestmark = [pytest.mark.cluster]


class Events:
    """The lines the jobs wrote: (event, key, pid, time)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[tuple[str, str, int, float]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            event, key, _host, pid, at = line.split()
            rows.append((event, key, int(pid), float(at)))
        return rows

    def starts(self, key: str) -> list[tuple[int, float]]:
        return [(pid, at) for e, k, pid, at in self.read() if e == "start" and k == key]

    def ends(self, key: str) -> list[tuple[int, float]]:
        return [(pid, at) for e, k, pid, at in self.read() if e == "end" and k == key]

    def overlaps(self) -> list[str]:
        return [k for e, k, _, _ in self.read() if e == "overlap"]


def enqueue(events: Events, key: str, seconds: float = 0.0) -> None:
    async_task(RUN, str(events.path), key, seconds, task_name=f"run {key}")


def dispatcher_of(cluster) -> int:
    (pid,) = wait_until(lambda: children(cluster.pid), timeout=10, message="the dispatcher")
    return pid


def workers_of(cluster, n: int = 2) -> list[int]:
    dispatcher = dispatcher_of(cluster)

    def ready() -> list[int]:
        found = children(dispatcher)
        return found if len(found) == n else []

    return wait_until(ready, timeout=10, message=f"{n} workers")


def seconds_until(predicate, *, since: float, timeout: float = 30) -> float:
    wait_until(predicate, timeout=timeout, interval=0.02, message="the condition")
    return time.time() - since


@pgbroker_only
def test_a_worker_sigkilled_mid_job_runs_the_job_again_within_two_seconds(qcluster, events):
    enqueue(events, "a", seconds=2.0)
    wait_until(lambda: events.starts("a"), timeout=30, message="the job to start")
    ((victim, _),) = events.starts("a")
    os.kill(victim, signal.SIGKILL)
    killed = time.time()
    again = seconds_until(lambda: len(events.starts("a")) == 2, since=killed)
    assert again < LIVENESS_BOUND, f"ran again {again:.2f} s after the kill"
    wait_until(queue_drained, timeout=30, message="the job to finish and be acknowledged")
    assert [pid for pid, _ in events.starts("a")][1] != victim
    assert len(events.ends("a")) == 1
    assert events.overlaps() == []


@pytest.mark.beside_lab  # mostly waits: make test's second pass
@pgbroker_only
def test_a_whole_cluster_sigkilled_hands_its_running_and_prefetched_jobs_to_another(
    transactional_db, start_process, events
):
    first = start_process("qcluster", name="first", ready="running.")
    keys = [f"j{i}" for i in range(5)]
    with transaction.atomic():  # one commit, one claim: 2 running, 2 in the pipes, 1 buffered
        for key in keys:
            enqueue(events, key, seconds=1.5)
    wait_until(lambda: len(events.read()) >= 2, timeout=30, message="two jobs to start")
    doomed = first.children() + [w for d in first.children() for w in children(d)]
    owner = Cluster.objects.get().owner
    assert Job.objects.filter(owner=owner).count() == 5, "running, in the pipes, prefetched"
    second = start_process("qcluster", name="second", ready="running.")
    for pid in [first.pid, *doomed]:
        os.kill(pid, signal.SIGKILL)
    killed = time.time()
    taken = seconds_until(lambda: not Job.objects.filter(owner=owner).exists(), since=killed)
    assert taken < LIVENESS_BOUND, f"taken back {taken:.2f} s after the kill"
    wait_until(queue_drained, timeout=60, message="every job to be done")
    for key in keys:
        assert events.ends(key), f"{key} never finished"
    assert events.overlaps() == []
    # all five at once, or fewer if the first finished one before its SIGKILL (a slow start
    # of the second cluster on a loaded machine): taken back by the sweep either way
    assert re.search(r"took back [1-5] job\(s\) of dead cluster", second.log())


@pgbroker_only
def test_the_dispatchers_backend_terminated_loses_nothing_and_runs_nothing_twice_at_once(
    qcluster, events
):
    keys = [f"t{i}" for i in range(10)]
    for key in keys:
        enqueue(events, key, seconds=0.3)
    wait_until(lambda: events.read(), timeout=30, message="the first job to start")
    with connection.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'pgbroker %%'")
        assert cur.fetchone()[0]
    wait_until(queue_drained, timeout=60, message="every job to be done")
    assert all(events.ends(k) for k in keys)
    assert events.overlaps() == []
    qcluster.wait_for_log("database back after")


@pgbroker_only
def test_a_claim_that_committed_as_the_connection_broke_is_handed_back_on_reconnect(
    qcluster, events
):
    """Found by `manage.py experiment`: the claim commits on the server, the connection dies
    before its rows arrive, the dispatcher reconnects within the grace and takes its key
    again. Those jobs carry a live owner's key that owner never saw: nobody would ever run
    them. The state is made here directly: a job given the live cluster's key behind its
    back, then its session ended."""
    wait_until(lambda: Cluster.objects.exists(), timeout=30, message="the cluster's row")
    owner = Cluster.objects.get().owner
    with transaction.atomic():  # committed already owned: the cluster's own claim never sees it
        enqueue(events, "orphan")
        Job.objects.update(owner=owner, claimed_at=timezone.now(), attempts=1)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'pgbroker %%'")
        assert cur.fetchone()[0]
    wait_until(lambda: events.ends("orphan"), timeout=30,
               message="the orphan job to be handed back and run:\n" + qcluster.log()[-2000:])
    assert len(events.starts("orphan")) == 1
    qcluster.wait_for_log("claimed while the connection broke")
    result = wait_until(lambda: Success.objects.filter(func=RUN).first(), timeout=10,
                        message="its result row (written in batches)")
    assert result.attempt_count == 1, "one result: it ran once"


@pgbroker_only
@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")),
                    reason="restarts the project-local PostgreSQL only")
def test_a_postgresql_restart_loses_no_job_and_runs_none_twice_at_once(qcluster, events):
    keys = [f"r{i}" for i in range(12)]
    for key in keys:
        enqueue(events, key, seconds=0.4)
    wait_until(lambda: len(events.read()) >= 2, timeout=30, message="jobs to start")
    connection.close()
    sideconn.close()
    local_postgres.restart(mode="immediate")  # a crash: every session ends, recovery, back
    wait_until(queue_drained, timeout=90, interval=0.5, message="every job to be done")
    assert all(events.ends(k) for k in keys), events.read()
    assert events.overlaps() == []
    qcluster.wait_for_log("database back after")


@pytest.mark.beside_lab  # a 6 s job: make test's second pass
def test_a_job_running_long_while_its_worker_lives_is_never_given_to_another_worker(
    transactional_db, start_process, events
):
    # pgbroker has no lease: nothing about a claimed job expires with time while its
    # cluster's session lives. Two clusters, so a second worker is always free to take it.
    # (With Q_BROKER=orm this holds only while the job is shorter than the lease.)
    for name in ("first", "second"):
        start_process("qcluster", name=name, ready="running.", Q_TIMEOUT="20")
    enqueue(events, "long", seconds=6)
    wait_until(lambda: events.ends("long"), timeout=60, message="the long job to finish")
    assert len(events.starts("long")) == 1
    assert events.overlaps() == []


@pgbroker_only
def test_a_poison_job_is_parked_after_its_attempts_and_the_other_jobs_keep_flowing(
    transactional_db, start_process, events
):
    cluster = start_process("qcluster", ready="running.", Q_MAX_ATTEMPTS="3",
                            JOB_MAX_ATTEMPTS="3")
    async_task("tests.pgbroker.tasks.crash", task_name="poison")
    keys = [f"ok{i}" for i in range(30)]
    for key in keys:
        enqueue(events, key)
    wait_until(lambda: Job.objects.parked().exists() and queue_drained(), timeout=30,
               message="the poison job to be parked and the rest done:\n" + cluster.log()[-2000:])
    (poison,) = Job.objects.all()
    assert poison.attempts == 3
    assert "gave up after 3 attempts" in poison.last_error
    assert all(events.ends(k) for k in keys)


KILLS = ["both idle workers", "a busy worker", "the idle dispatcher", "the busy dispatcher"]


@pytest.mark.parametrize("target", KILLS)
def test_the_cluster_survives_a_sigkill_of_any_process_and_is_back_at_full_speed(
    qcluster, events, target
):
    busy = target.startswith("the busy") or target == "a busy worker"
    if (target == "the busy dispatcher" or target == "a busy worker") and not uses_pgbroker():
        pytest.skip("a killed busy job comes back when the ORM broker's lease runs out")
    if busy:
        enqueue(events, "busy", seconds=1.0)
        wait_until(lambda: events.starts("busy"), timeout=30, message="the job to start")
    dispatcher = dispatcher_of(qcluster)
    if target == "both idle workers":
        victims = workers_of(qcluster)
    elif target == "a busy worker":
        victims = [events.starts("busy")[0][0]]
    else:
        victims = [dispatcher]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    killed = time.time()
    n = 200
    for i in range(n):
        async_task("math.floor", i + 0.5)
    back = seconds_until(lambda: Success.objects.filter(func="math.floor").count() == n,
                         since=killed, timeout=60)
    # The 2 s is pgbroker's promise; the stock ORM broker (compared, not promised) only has to
    # come back, and its pass shares the machine with the browser and lab tests.
    bound = LIVENESS_BOUND if uses_pgbroker() else ORM_COMES_BACK
    assert back < bound, f"{n} jobs done {back:.2f} s after the kill"
    if busy:
        wait_until(lambda: events.ends("busy"), timeout=30, message="the killed job to finish")
        assert events.overlaps() == []
    assert qcluster.proc.poll() is None


def test_large_jobs_and_results_never_block_the_cluster(transactional_db, start_process, events):
    # One worker busy with a job that returns 300 kB while a 300 kB job waits for it: were the
    # waiting job sent down the busy worker's pipe, both ends would block on full pipes.
    start_process("qcluster", ready="running.", Q_WORKERS="1")
    blob = "y" * 300_000
    with transaction.atomic():
        for key in ("first", "second", "third"):
            async_task("tests.pgbroker.tasks.big", str(events.path), key, 0.5, blob, 300_000)
    wait_until(queue_drained, timeout=30, message="the large jobs to be done")
    assert [len(events.ends(k)) for k in ("first", "second", "third")] == [1, 1, 1]
    assert Success.objects.filter(func="tests.pgbroker.tasks.big").count() == 3
