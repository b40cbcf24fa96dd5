"""Fencing that does not rely on timing: a paused dispatcher whose session is ended must not
have its jobs run elsewhere while its workers still run them (real clusters, real SIGSTOP,
a real pg_terminate_backend). Jobs write start/end lines and hold a per-job file lock while
they run (tests/pgbroker/tasks.py): a second run of a job while the first lives is seen."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db import connection, transaction

from devtools.processes import alive
from jobs.selectors import queue_drained
from pgbroker.models import Cluster, Job
from tests.helpers import wait_until
from tests.pgbroker.test_liveness import dispatcher_of, enqueue, pgbroker_only

# They wait on graces and pauses more than they compute: `make test` runs them beside the
# ORM pass.
pytestmark = [pytest.mark.cluster, pgbroker_only, pytest.mark.beside]


def end_dispatcher_session(owner: int) -> int:
    """pg_terminate_backend of the session that holds `owner`'s key as the dispatcher (the
    workers' sessions hold it too, and are left alone)."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.objsubid = 1 "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s "
            "AND a.application_name LIKE 'pgbroker %%' "
            "AND a.application_name <> 'pgbroker worker'", [owner])
        return cur.fetchone()[0]


def test_a_paused_dispatcher_whose_session_ended_keeps_its_jobs_from_running_twice(
    transactional_db, start_process, events
):
    """The issue measured 3 overlaps and 2 jobs run twice in full: the other cluster took the
    jobs back after the grace while the paused cluster's workers still ran them. The workers
    hold the key too, so nobody may take those jobs while they live."""
    first = start_process("qcluster", name="first", ready="running.")
    keys = [f"p{i}" for i in range(6)]
    with transaction.atomic():  # one claim: 2 running, 2 in the pipes, 2 buffered
        for key in keys:
            enqueue(events, key, seconds=2.0)
    wait_until(lambda: len(events.starts("p0") + events.starts("p1")) >= 1, timeout=30,
               message="the first jobs to start")
    owner = Cluster.objects.get().owner
    start_process("qcluster", name="second", ready="running.")
    dispatcher = dispatcher_of(first)
    os.kill(dispatcher, signal.SIGSTOP)
    try:
        assert end_dispatcher_session(owner) == 1
        time.sleep(4)  # grace (1 s) and sweeps well past: were the key free, it was taken
        assert Job.objects.filter(owner=owner).count() >= 2, "nothing was taken back"
        assert events.overlaps() == []
    finally:
        os.kill(dispatcher, signal.SIGCONT)
    wait_until(queue_drained, timeout=60, message="every job to be done:\n" + first.log()[-2000:])
    assert events.overlaps() == []
    # at least once: on resuming, the dispatcher's fence sees its last round trip 4 s old and
    # stops its busy workers (a job it stops runs again, never at the same time)
    assert all(events.ends(key) for key in keys)


def test_a_hung_dispatcher_is_killed_and_its_jobs_run_elsewhere(
    transactional_db, start_process, events
):
    """The other side of the workers' key: a dispatcher that never turns its loop again would
    keep its jobs forever. Its main process kills it (and so its workers) after
    PGBROKER_HANG_SECONDS."""
    hang = 3.0  # (the default is 10 s)
    first = start_process("qcluster", name="first", ready="running.", Q_WORKERS="1",
                          PGBROKER_HANG_SECONDS=str(hang))
    keys = ["h0", "h1", "h2", "h3"]
    with transaction.atomic():  # one claim: h0 running, h1 in the pipe, h2 and h3 buffered
        enqueue(events, "h0", seconds=2.0)
        for key in keys[1:]:
            enqueue(events, key, seconds=0.2)
    wait_until(lambda: events.starts("h0"), timeout=30, message="the first job to start")
    owner = Cluster.objects.get().owner
    assert Job.objects.filter(owner=owner).count() == 4
    start_process("qcluster", name="second", ready="running.")
    os.kill(dispatcher_of(first), signal.SIGSTOP)
    paused = time.monotonic()
    wait_until(lambda: all(events.ends(k) for k in keys), timeout=hang + 20,
               message=lambda: "the jobs to run elsewhere:\n" + first.log()[-2000:])
    assert time.monotonic() - paused >= hang - 1, "the buffered jobs waited for the kill"
    first.wait_for_log("has not turned its loop")
    assert not Job.objects.filter(owner=owner).exists()
    assert events.overlaps() == []
    # h0 and h1 finished on the paused cluster, whose acknowledgements died with it: they
    # ran again (at least once, one after the other); the buffered ones never ran there
    assert [len(events.ends(k)) for k in keys[2:]] == [1, 1]


def test_workers_whose_key_sessions_were_ended_hold_the_key_again_at_once(
    transactional_db, start_process, events
):
    """Every session of a cluster ended while its workers run (a proxy's restart, an
    administrator) and its dispatcher cannot take the key again (here: stopped): the key is
    free, and another cluster would take the jobs after the grace while the workers still run
    them (the jepsen preset found it). Each worker takes the key again at once, on a new
    session, and checks its job is still its cluster's: nothing is taken back, nothing runs
    twice at once."""
    first = start_process("qcluster", name="first", ready="running.")
    keys = [f"w{i}" for i in range(4)]
    with transaction.atomic():
        for key in keys:
            enqueue(events, key, seconds=2.0)
    wait_until(lambda: len(events.read()) >= 2, timeout=30, message="both workers to start")
    owner = Cluster.objects.get().owner
    second = start_process("qcluster", name="second", ready="running.")
    dispatcher = dispatcher_of(first)
    os.kill(dispatcher, signal.SIGSTOP)
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l "
                        "WHERE l.locktype = 'advisory' AND l.objsubid = 1 "
                        "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s", [owner])
            assert cur.fetchone()[0] == 3, "the dispatcher's and both workers'"
        time.sleep(2.5)  # past the grace: had the key stayed free, the jobs were taken
        assert "took back" not in second.log()
        assert events.overlaps() == []
    finally:
        os.kill(dispatcher, signal.SIGCONT)
    wait_until(queue_drained, timeout=30, message=lambda: "the jobs:\n" + first.log()[-2000:])
    assert [len(events.ends(k)) for k in keys] == [1] * len(keys)
    assert events.overlaps() == []
    assert Job.objects.filter(owner=owner).count() == 0


def test_a_stopped_cluster_whose_sessions_were_ended_runs_no_more_of_its_job_when_resumed(
    transactional_db, start_process, events
):
    """A whole cluster stopped (SIGSTOP: a debugger, a stopped container) while its sessions
    are ended: its key is free, another cluster takes its job and runs it. When the stopped
    one resumes, its worker is in the middle of that job: it checks its key before one more
    instruction of the job runs, and exits (the fence alone would let it run on for up to a
    tenth of a second)."""
    from django_q.tasks import async_task

    first = start_process("qcluster", name="first", ready="running.", Q_WORKERS="1")
    async_task("tests.pgbroker.tasks.ticking", str(events.path), "frozen", 2.0)
    wait_until(lambda: events.starts("frozen"), timeout=30, message="the job to start")
    ((worker, _),) = events.starts("frozen")
    owner = Cluster.objects.get().owner
    start_process("qcluster", name="second", ready="running.")
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        with connection.cursor() as cur:  # every session holding the first cluster's key
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
                        "WHERE locktype = 'advisory' AND objsubid = 1 "
                        "AND ((classid::bigint << 32) | objid::bigint) = %s", [owner])
            assert cur.fetchone()[0] == 2, "the dispatcher's and the worker's"
        wait_until(lambda: len(events.starts("frozen")) == 2, timeout=30,
                   message="the job to run on the second cluster")
    finally:
        resumed = time.time()
        os.killpg(first.pid, signal.SIGCONT)
    wait_until(lambda: not alive(worker), timeout=5, message="the resumed worker to exit")
    wait_until(lambda: events.ends("frozen"), timeout=30, message="the second run to end")
    after = [at for e, k, pid, at in events.read() if pid == worker and at > resumed]
    assert after == [], f"the resumed worker ran on for {max(after) - resumed:.3f} s"
    assert [pid for pid, _ in events.ends("frozen")] != [worker]
    first.wait_for_log("; exiting")  # its key lost: said by its SIGCONT handler or its watcher
