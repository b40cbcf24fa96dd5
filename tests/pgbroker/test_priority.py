"""Priorities: `async_task(..., q_options={"priority": n})` or a `priority(n)` block stores n on
the job; the claim takes the highest first, then the oldest, a minute of waiting counting as a
point of priority (so nothing starves), in one scan of its index; the admin shows it."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.urls import reverse
from django.utils import timezone
from django_q.models import Success
from django_q.signing import SignedPackage
from django_q.tasks import AsyncTask, async_task

from jobs.selectors import uses_pgbroker
from pgbroker.broker import batched_enqueue, priority, requested_priority
from pgbroker.cluster.session import CLAIM, DispatcherSession
from pgbroker.models import Job, check_priority
from tests.helpers import wait_until
from tests.pgbroker.test_liveness import Events
from users.models import User

pytestmark = pytest.mark.skipif(not uses_pgbroker(), reason="pgbroker's priorities")

NOOP = "tests.pgbroker.tasks.noop"
STARTED = "tests.pgbroker.tasks.started"
QUEUE = "priority-test"  # the claim tests' own queue: no cluster serves it


# --- asking for a priority --------------------------------------------------------------------

@pytest.mark.parametrize("value", [-100, -1, 0, 1, 100])
def test_a_priority_is_a_whole_number_from_minus_100_to_100(value):
    assert check_priority(value) == value


@pytest.mark.parametrize(("value", "said"), [
    (101, "not 101"), (-101, "not -101"), (10**6, "not 1000000"),
    (1.0, "not 1.0 (float)"), ("5", "not '5' (str)"), (None, "not None (NoneType)"),
    (True, "not True (bool)"),
])
def test_anything_else_is_refused_in_one_line(value, said):
    with pytest.raises(ValueError, match="whole number from -100 to 100") as refused:
        check_priority(value)
    assert said in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_block_with_a_bad_priority_is_refused_on_entry():
    with pytest.raises(ValueError, match="not 500"), priority(500):
        pass
    assert requested_priority() == 0


def priorities() -> list[int]:
    return list(Job.objects.order_by("id").values_list("priority", flat=True))


def test_q_options_a_block_or_nothing_sets_the_priority(db):
    async_task(NOOP, 1)
    async_task(NOOP, 2, q_options={"priority": 7})
    with priority(-5):
        async_task(NOOP, 3)
        async_task(NOOP, 4, q_options={"priority": 9})  # its own wins
        with priority(50):
            async_task(NOOP, 5)
        async_task(NOOP, 6)
        AsyncTask(NOOP, 7, q_options={"priority": 3}).run()
    async_task(NOOP, 8)
    assert priorities() == [0, 7, -5, 9, 50, -5, 3, 0]


def test_the_package_and_the_jobs_arguments_stay_as_django_q2_made_them(db):
    """django-q2 1.11 drops the q_options it does not know (which is why the broker reads
    async_task()'s own q_options): if it starts keeping them, the broker could read the
    priority from the task instead."""
    async_task(NOOP, 1, q_options={"priority": 7, "task_name": "seven"})
    task = SignedPackage.loads(Job.objects.get().payload)
    assert "priority" not in task
    assert (task["name"], task["args"], task["kwargs"]) == ("seven", (1,), {})


def test_a_bad_priority_in_q_options_enqueues_nothing(db):
    for bad in (101, "high", 2.5):
        with pytest.raises(ValueError, match="whole number from -100 to 100"):
            async_task(NOOP, 1, q_options={"priority": bad})
    assert not Job.objects.exists()


def test_batched_enqueue_keeps_each_jobs_priority(db):
    with transaction.atomic(), batched_enqueue():
        async_task(NOOP, 1)
        async_task(NOOP, 2, q_options={"priority": 100})
        with priority(-100):
            async_task(NOOP, 3)
    with transaction.atomic(), batched_enqueue():  # all at 0: no priorities sent
        async_task(NOOP, 4)
    assert priorities() == [0, 100, -100, 0]


def test_the_database_refuses_a_priority_out_of_range(db):
    with pytest.raises(IntegrityError, match="pgbroker_priority_range"), \
            transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT pgbroker_enqueue('q', 'p', 101)")
    with pytest.raises(IntegrityError, match="pgbroker_priority_range"), transaction.atomic():
        Job.objects.create(queue="q", payload="p", priority=-101)


def test_a_producer_of_the_version_before_enqueues_at_priority_0(db):
    with connection.cursor() as cur:
        cur.execute("SELECT pgbroker_enqueue('q', 'p')")
        cur.execute("SELECT count(*) FROM pgbroker_enqueue_many('q', ARRAY['a', 'b'])")
    assert priorities() == [0, 0, 0]


# --- the claim --------------------------------------------------------------------------------

def add(key: str, *, prio: int = 0, due_ago: timedelta = timedelta(0), **fields) -> int:
    return Job.objects.create(queue=QUEUE, payload=key, priority=prio,
                              run_at=timezone.now() - due_ago, **fields).pk


@pytest.fixture
def session(transactional_db):
    s = DispatcherSession(alias="default", queue=QUEUE, owner=0x5EED)
    s.connect(pid=os.getpid())
    yield s
    s.close()


def test_the_claim_takes_the_highest_priority_first_and_a_minute_waited_counts_as_a_point(
    session
):
    minutes = lambda n: timedelta(minutes=n)  # noqa: E731
    add("now, 0")
    add("now, 10", prio=10)
    add("5 min ago, 10", prio=10, due_ago=minutes(5))  # counts as due 15 min ago
    add("now, 100", prio=100)  # 100 min ago
    add("2 h ago, 0", due_ago=minutes(120))  # has waited longer than 100 points' worth
    add("3 h ago, -100", prio=-100, due_ago=minutes(180))  # 80 min ago: ahead of "5 min, 10"
    add("now, -1", prio=-1)
    add("now, 0 again")  # same rank as "now, 0" (almost): by id
    add("in 1 min, 100", prio=100, due_ago=minutes(-1))  # not due: a retry waiting
    add("parked, 100", prio=100, parked_at=timezone.now())
    add("claimed, 100", prio=100, owner=1)

    claimed = [job.payload for job in session.claim(50)]

    assert claimed == ["2 h ago, 0", "now, 100", "3 h ago, -100", "5 min ago, 10", "now, 10",
                       "now, 0", "now, 0 again", "now, -1"]


def test_a_claim_of_n_takes_the_n_first_in_that_order(session):
    low = [add(f"low {i}", prio=-1, due_ago=timedelta(seconds=30)) for i in range(5)]
    high = [add(f"high {i}", prio=1) for i in range(3)]
    assert [j.id for j in session.claim(4)] == [*high, low[0]]
    assert [j.id for j in session.claim(10)] == low[1:]


def claim_plan() -> dict:
    with connection.cursor() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + CLAIM, {"queue": QUEUE, "n": 50, "owner": 1})
        (plan,) = cur.fetchone()
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]


def nodes(plan: dict) -> list[dict]:
    return [plan, *(n for child in plan.get("Plans", []) for n in nodes(child))]


def test_the_claim_is_one_scan_of_its_index_in_order_without_a_sort(transactional_db):
    with connection.cursor() as cur:  # a queue of 20,000 in 3 queues, 5 priorities, a few parked
        cur.execute("""
            INSERT INTO pgbroker_job (queue, payload, priority, run_at, parked_at)
            SELECT (ARRAY[%s, 'other', 'third'])[1 + g %% 3], 'p', (g %% 5) - 2,
                   now() - g * interval '1 ms',
                   CASE WHEN g %% 100 = 0 THEN now() END
              FROM generate_series(1, 20000) AS g""", [QUEUE])
        cur.execute("ANALYZE pgbroker_job")

    plan = nodes(claim_plan())

    scans = [n for n in plan
             if n.get("Relation Name") == "pgbroker_job" and "Scan" in n["Node Type"]]
    finding = [n for n in scans if n.get("Index Name") != "pgbroker_job_pkey"]
    assert [(n["Node Type"], n.get("Index Name")) for n in finding] == [
        ("Index Scan", "pgbroker_claim_idx")], plan
    (scan,) = finding  # jobs not due yet are passed over in the index, never fetched
    assert "run_at <= now()" in scan["Index Cond"]
    assert "run_at" not in scan.get("Filter", "")
    assert not [n for n in plan if "Sort" in n["Node Type"]], plan
    # the UPDATE finds each chosen row by its primary key
    assert [n.get("Index Name") for n in scans if n not in finding] == ["pgbroker_job_pkey"]


# --- a real cluster -----------------------------------------------------------------------------

@pytest.mark.cluster
def test_a_real_cluster_starts_the_high_priority_jobs_first_and_finishes_the_rest(
    transactional_db, start_process, tmp_path
):
    """1,000 jobs at priority 0 queued first, 10 at priority 10 after them, in one commit. One
    worker: it starts jobs in the order the cluster claimed them, so the start order is the
    claim's (with more workers the jobs of one claim start side by side)."""
    events = Events(tmp_path / "events")
    start_process("qcluster", ready="running.", Q_WORKERS="1")
    low = [f"low-{i}" for i in range(1000)]
    high = [f"high-{i}" for i in range(10)]
    ids = []
    with transaction.atomic():
        ids += [async_task(STARTED, str(events.path), key) for key in low]
        ids += [async_task(STARTED, str(events.path), key, q_options={"priority": 10})
                for key in high]

    wait_until(lambda: Success.objects.filter(id__in=ids).count() == len(ids), timeout=120,
               interval=0.5, message=lambda: f"{len(events.read())} of 1010 jobs started")

    order = [key for event, key, _, _ in events.read() if event == "start"]
    assert order[:10] == high
    assert order[10:] == low, "the rest in the order they were queued, each once"
    assert not Job.objects.exists()


# --- the admin --------------------------------------------------------------------------------

def test_the_job_list_shows_sorts_and_filters_by_priority(db, client):
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    for prio in (-3, 42, 0):
        async_task(NOOP, prio, q_options={"priority": prio})
    url = reverse("admin:pgbroker_job_changelist")

    page = client.get(url).content.decode()
    assert "column-priority" in page
    assert '<td class="field-priority">42</td>' in page

    column = list(client.get(url).context["cl"].list_display).index("priority")
    ranked = client.get(url, {"o": f"-{column}"}).context["cl"].result_list
    assert [j.priority for j in ranked] == [42, 0, -3]
    only = client.get(url, {"priority": "42"}).context["cl"].result_list
    assert [j.priority for j in only] == [42]
