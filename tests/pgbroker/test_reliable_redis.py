"""Reliable fetch's moves on a real Redis (pgbroker.reliable_redis): what is taken is in the
taker's in-flight list, leaves it only when settled, and a dead taker's jobs go back to the
head of the queue, once. The clusters that use these moves are tested in
tests/jobs/test_reliable_fetch.py."""

from __future__ import annotations

import json
import time

import pytest

from jobs.queues import redis_queue
from pgbroker.reliable_redis import ALIVE_MS, RedisFetch, digest
from tests.helpers import wait_until


@pytest.fixture
def queue():
    q = redis_queue()
    return q


def fetch(queue, owner: int) -> RedisFetch:
    return queue.fetch(owner)


def push(queue, *packages: bytes) -> None:
    queue.connection.rpush(queue.list_key, *packages)


def queued(queue) -> list[bytes]:
    return queue.connection.lrange(queue.list_key, 0, -1)


def test_taking_moves_jobs_into_the_takers_in_flight_list_in_order(queue):
    push(queue, b"a", b"b", b"c")
    one = fetch(queue, 1)

    assert one.take(2) == [(b"a", 0), (b"b", 0)]

    assert queued(queue) == [b"c"]
    assert one.mine() == {b"a", b"b"}
    assert queue.in_flight() == [b"a", b"b"]
    assert one.take(5) == [(b"c", 0)]
    assert one.take(5) == []


def test_a_settled_job_leaves_the_in_flight_list_and_a_handed_back_one_goes_first(queue):
    push(queue, b"a", b"b", b"c", b"d")
    one = fetch(queue, 1)
    one.take(3)

    one.settle(acked=[b"a"], back=[b"b", b"c"], died=[], parked=[])

    assert one.mine() == set()
    assert queued(queue) == [b"b", b"c", b"d"]  # back at the head, in their order


def test_a_job_whose_worker_died_counts_the_attempt_and_parking_keeps_it_with_the_reason(queue):
    push(queue, b"poison")
    one = fetch(queue, 1)
    for attempt in range(2):
        assert one.take(1) == [(b"poison", attempt)]
        one.settle(acked=[], back=[], died=[b"poison"], parked=[])
    assert one.take(1) == [(b"poison", 2)]

    one.settle(acked=[], back=[], died=[], parked=[(b"poison", "killed its worker 3 times")])

    assert queued(queue) == []
    assert one.mine() == set()
    [parked] = queue.parked()
    assert (parked["package"], parked["why"]) == ("poison", "killed its worker 3 times")
    assert not queue.connection.hexists(one.attempts, digest(b"poison"))


def test_a_cluster_that_was_moved_back_puts_no_second_copy_in_the_queue(queue):
    """A cluster taken for dead settles late: its jobs are already queued again."""
    push(queue, b"a", b"b")
    one, other = fetch(queue, 1), fetch(queue, 2)
    one.renew("one")
    one.take(2)
    queue.connection.delete(one.alive)  # its key expired

    assert other.sweep() == {"1": 2}
    assert queued(queue) == [b"a", b"b"]

    one.settle(acked=[b"a"], back=[b"b"], died=[], parked=[])
    assert queued(queue) == [b"a", b"b"]  # nothing twice, nothing lost
    assert one.renew("one") == -1  # it learns its jobs were moved back


def test_a_live_cluster_is_never_swept_and_its_key_expires_unless_renewed(queue):
    push(queue, b"a")
    one, other = fetch(queue, 1), fetch(queue, 2)
    assert one.renew("one") == 0  # registered
    one.take(1)

    assert other.sweep() == {}
    assert one.renew("one") == 1
    wait_until(lambda: not queue.connection.exists(one.alive), timeout=ALIVE_MS / 1000 + 2,
               message="the key to expire")
    assert other.sweep() == {"1": 1}
    assert queued(queue) == [b"a"]
    assert queue.in_flight() == []
    assert one.renew("one") == -1


def test_a_stopping_cluster_hands_back_what_it_still_holds_and_leaves(queue):
    push(queue, b"a", b"b")
    one = fetch(queue, 1)
    one.renew("one")
    one.take(2)
    one.settle(acked=[b"a"], back=[], died=[], parked=[])

    assert one.leave() == 1

    assert queued(queue) == [b"b"]
    assert not queue.connection.sismember(one.clusters, "1")
    assert not queue.connection.exists(one.alive)


def test_a_blocked_wait_moves_the_next_job_into_the_in_flight_list(queue):
    one = fetch(queue, 1)
    started = time.monotonic()
    assert one.wait_one(0.2) is None
    assert time.monotonic() - started >= 0.15
    push(queue, b"a")
    assert one.wait_one(0.2) == b"a"
    assert one.mine() == {b"a"}


def test_the_parked_record_is_json_a_person_can_read(queue):
    push(queue, b"x")
    one = fetch(queue, 1)
    one.take(1)
    one.settle(acked=[], back=[], died=[], parked=[(b"x", "bad package")])
    raw = queue.connection.lrange(one.parked, 0, -1)[0]
    assert set(json.loads(raw)) == {"package", "why", "at", "cluster"}


@pytest.mark.cluster
@pytest.mark.any_broker
@pytest.mark.beside_conformance  # mostly waits: make test's second pass
def test_a_redis_cluster_stopped_past_its_lease_runs_no_more_of_its_jobs_when_resumed(
        transactional_db, start_process, events):
    """A whole Redis cluster stopped (SIGSTOP: a debugger, a paused container) longer than
    its key lives: another cluster moves its jobs back and runs them. When it resumes, its
    worker is in the middle of one of them: it sees that its cluster has not proved alive
    recently, and exits before one more instruction of the job runs; the job behind it in its
    pipe is not started there."""
    import os
    import signal

    from django_q.tasks import async_task

    from devtools.processes import alive

    queue = redis_queue()
    first = start_process("qcluster", name="first", ready="running.", Q_CLUSTER_NAME="redis",
                          Q_WORKERS="1", Q_TIMEOUT="60")
    async_task("tests.pgbroker.tasks.ticking", str(events.path), "frozen", 8.0, broker=queue)
    async_task("tests.pgbroker.tasks.ticking", str(events.path), "behind", 0.1, broker=queue)
    wait_until(lambda: events.starts("frozen"), timeout=30, message="the job to start")
    ((worker, _),) = events.starts("frozen")
    wait_until(lambda: len(queue.in_flight()) == 2, timeout=10,
               message="the job behind it to be in the first cluster's hands too")
    second = start_process("qcluster", name="second", ready="running.",
                           Q_CLUSTER_NAME="redis", Q_TIMEOUT="60")
    assert not events.ends("frozen"), "still running when its cluster stops"
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: len(events.starts("frozen")) == 2 and events.ends("behind"),
                   timeout=30, message=lambda: "both jobs to run on the second cluster:\n"
                   + second.log()[-2000:])
    finally:
        resumed = time.time()
        os.killpg(first.pid, signal.SIGCONT)
    wait_until(lambda: not alive(worker), timeout=5, message="the resumed worker to exit")
    wait_until(lambda: len(events.ends("frozen")) == 1, timeout=60,
               message=lambda: "the second run to end:\n" + second.log()[-3000:])
    after = [at for e, k, pid, at in events.read() if pid == worker and at > resumed]
    assert after == [], f"the resumed worker ran on for {max(after) - resumed:.3f} s"
    assert [pid for pid, _ in events.ends("frozen")] != [worker]
    assert len(events.starts("behind")) == 1, "the job behind it ran once, elsewhere"
    # said by the worker's SIGCONT handler, or by the dispatcher's fence if it struck first
    wait_until(lambda: "did not prove alive while it was stopped; exiting" in first.log()
               or "no answer from Redis for" in first.log(), timeout=10,
               message=lambda: "the first cluster to say why its worker stopped:\n"
               + first.log()[-2000:])
    wait_until(lambda: queue.in_flight() == [], timeout=10,
               message="nothing left in any in-flight list")


@pytest.mark.cluster
@pytest.mark.any_broker
@pytest.mark.beside_conformance  # mostly waits: make test's second pass
def test_a_job_in_a_live_clusters_in_flight_list_that_it_does_not_hold_runs_again(
        transactional_db, start_process, events):
    """A take whose answer was lost (the connection broke after Redis ran it) leaves a job in
    the cluster's in-flight list that nobody runs, and nobody sweeps: the cluster is alive.
    It compares its list with what it holds and hands such a job back to the queue."""
    from django_q.tasks import async_task

    from jobs.queues import RedisQueue

    queue = redis_queue()
    start_process("qcluster", name="cluster", ready="running.", Q_CLUSTER_NAME="redis",
                  Q_WORKERS="1")
    wait_until(lambda: queue.connection.smembers(f"{queue.list_key}:clusters"), timeout=10,
               message="the cluster to register")
    [owner] = [o.decode() for o in queue.connection.smembers(f"{queue.list_key}:clusters")]
    collecting = RedisQueue()
    collecting.collected = []
    async_task("tests.pgbroker.tasks.run", str(events.path), "lost", broker=collecting)
    [package] = collecting.collected
    queue.connection.rpush(f"{queue.list_key}:inflight:{owner}", package)  # taken, unknown

    wait_until(lambda: events.ends("lost"), timeout=15, message="the orphan to run")
    assert len(events.starts("lost")) == 1
    wait_until(lambda: queue.in_flight() == [], timeout=10, message="nothing left in flight")
