"""django-q2's task API on the main cluster of each broker (conftest.py): one test per feature.

The cluster: 2 workers, `timeout` 2 s, `max_attempts` 2 (Q_TIMEOUT, Q_MAX_ATTEMPTS), the rest
as the project configures each broker. The ORM broker then redelivers an unacknowledged task
after its lease, 8 s (project/settings.py's formula); pgbroker after 1 s (its backoff).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import Failure, Schedule, Success, Task
from django_q.tasks import (
    Chain,
    async_chain,
    async_iter,
    async_task,
    count_group,
    delete_group,
    fetch,
    fetch_group,
    queue_size,
    result,
    result_group,
    schedule,
)

from tests.conformance.conftest import TASKS, differs, events, runs, unique

# conformance: its own run in make test's second pass (it mostly waits on its clusters)
pytestmark = [pytest.mark.cluster, pytest.mark.any_broker, pytest.mark.conformance]

WAIT_MS = 20_000  # result(wait=...) is in milliseconds
IDLE_QUEUE = "conformance-idle"  # a queue no cluster consumes



# --- tasks and results ---------------------------------------------------------------------


def test_async_task_result_and_fetch(cluster):
    tid = async_task(f"{TASKS}.add", 2, 3, task_name=unique("add"))
    assert result(tid, wait=WAIT_MS) == 5
    task = fetch(tid, wait=WAIT_MS)
    assert task.success is True
    assert (task.func, task.args, task.kwargs, task.result) == (f"{TASKS}.add", (2, 3), {}, 5)
    assert task.cluster == Conf.CLUSTER_NAME
    assert task.group is None
    assert task.started <= task.stopped
    assert task.attempt_count == 1
    assert Success.objects.filter(id=tid).exists()

    failed = async_task(f"{TASKS}.fail", unique("fail"), ack_failure=True)
    task = fetch(failed, wait=WAIT_MS)
    assert task.success is False
    assert "RuntimeError: conformance failure" in task.result
    assert Failure.objects.filter(id=failed).exists()
    assert result(failed) == task.result  # result() gives a failure's traceback too


def test_save_false_keeps_no_success(cluster):
    key = unique("unsaved")
    tid = async_task(f"{TASKS}.run", key, save=False)
    cluster.settle(lambda: runs(key) and tid not in cluster.queued_ids(), "the task to run")
    assert runs(key) == 1
    assert fetch(tid) is None
    assert not Task.objects.filter(id=tid).exists()


def test_groups(cluster):
    group, other = unique("group"), unique("group")
    ids = [async_task(f"{TASKS}.add", i, i, group=group) for i in range(3)]
    ids.append(async_task(f"{TASKS}.fail", unique("fail"), group=group, ack_failure=True))
    async_task(f"{TASKS}.add", 1, 1, group=other)

    assert len(fetch_group(group, count=4, wait=WAIT_MS)) == 4
    cluster.wait_drained()
    assert count_group(group) == 4  # every result, failures included
    assert count_group(group, failures=True) == 1
    assert sorted(result_group(group)) == [0, 2, 4]  # successes only
    assert len(result_group(group, failures=True)) == 4
    assert len(fetch_group(group, failures=False)) == 3
    assert sorted(fetch_group(group), key=lambda t: t.success)[0].success is False

    delete_group(group)  # the label goes, the results stay
    assert count_group(group) == 0
    assert Task.objects.filter(id__in=ids, group=None).count() == 4
    assert len(fetch_group(other, count=1, wait=WAIT_MS)) == 1
    delete_group(other, tasks=True)  # the results go too
    assert count_group(other) == 0
    assert not Task.objects.filter(group=other).exists()


def test_chain_runs_in_order(cluster):
    keys = [unique(f"chain{i}") for i in range(3)]
    chain = Chain()
    for key in keys:
        chain.append(f"{TASKS}.run", key)
    group = chain.run()
    assert sorted(chain.result(wait=WAIT_MS)) == sorted(keys)
    assert chain.current() == 3
    assert [e.key for e in events(kind="run") if e.key in keys] == keys
    # each link was enqueued (its `started`) once the one before it had finished
    links = {task.result: task for task in fetch_group(group)}
    for before, after in zip(keys, keys[1:], strict=False):
        assert links[before].stopped <= links[after].started


def test_async_chain_runs_in_order(cluster):
    keys = [unique(f"achain{i}") for i in range(3)]
    group = async_chain([(f"{TASKS}.run", (key,)) for key in keys])
    assert sorted(result_group(group, count=3, wait=WAIT_MS)) == sorted(keys)
    assert [e.key for e in events(kind="run") if e.key in keys] == keys


def test_async_iter_gives_the_list(cluster):
    iter_id = async_iter(f"{TASKS}.add", [(1, 2), (3, 4), (5, 6)])
    cluster.settle(lambda: result(iter_id) is not None
                   or Task.objects.filter(group=iter_id).count() == 3, "the iter's result")
    assert sorted(result(iter_id)) == [3, 7, 11]
    assert fetch(iter_id).args == [(1, 2), (3, 4), (5, 6)]
    assert not Task.objects.filter(group=iter_id).exists(), "one result, not one per task"


def test_sync_runs_inline(cluster):
    tid = async_task(f"{TASKS}.whoami", sync=True)
    task = fetch(tid)  # no wait: it ran before async_task returned
    assert task is not None
    assert task.success
    assert task.result == os.getpid()
    assert tid not in cluster.queued_ids()


def test_hook_is_called_with_the_task(cluster):
    tid = async_task(f"{TASKS}.add", 2, 2, hook=f"{TASKS}.hook")
    hooks = cluster.settle(lambda: events(kind="hook", key=tid), "the hook")
    assert [e.detail for e in hooks] == ["True:4"]
    assert Task.objects.get(id=tid).hook == f"{TASKS}.hook"


# --- the cache -----------------------------------------------------------------------------


def cache_key(task_or_group: str) -> str:
    return f"{get_broker().list_key}:{task_or_group}"


def test_cached_result(cluster):
    tid = async_task(f"{TASKS}.add", 1, 2, cached=True)
    cluster.settle(lambda: cache.get(cache_key(tid)) or Task.objects.filter(id=tid).exists(),
                   "the result, in the cache or the database")
    assert result(tid, cached=True) == 3
    task = fetch(tid, cached=True)
    assert (task.id, task.result, task.success) == (tid, 3, True)
    assert not Task.objects.filter(id=tid).exists(), "a cached result is not saved"


def test_cached_group_and_iter(cluster):
    group = unique("cgroup")
    for i in range(3):
        async_task(f"{TASKS}.add", i, i, group=group, cached=True)
    cluster.settle(lambda: count_group(group, cached=True) == 3
                   or Task.objects.filter(group=group).count() == 3, "the cached group")
    assert sorted(result_group(group, cached=True)) == [0, 2, 4]
    assert len(fetch_group(group, cached=True)) == 3
    delete_group(group, cached=True)
    assert count_group(group, cached=True) is None

    iter_id = async_iter(f"{TASKS}.add", [(1, 1), (2, 2)], cached=True)
    cluster.settle(lambda: result(iter_id, cached=True) is not None
                   or Task.objects.filter(group=iter_id).count() == 2, "the cached iter")
    assert sorted(result(iter_id, cached=True)) == [2, 4]


# --- timeouts, failures and attempts -------------------------------------------------------


def test_per_task_timeout(cluster):
    killed, spared = unique("killed"), unique("spared")
    # ack_failure: the timed-out task is not retried (its retry is not what this test is for)
    short = async_task(f"{TASKS}.nap", killed, 5, timeout=1, ack_failure=True)
    long = async_task(f"{TASKS}.nap", spared, 3, timeout=6)  # longer than Q_TIMEOUT (2 s)
    task = fetch(short, wait=WAIT_MS)
    assert task.success is False
    assert "Task exceeded maximum timeout value (1 seconds)" in task.result
    assert result(long, wait=WAIT_MS) == spared
    assert not events(kind="end", key=killed), "the timed-out task was stopped"
    assert len(events(kind="end", key=spared)) == 1


def test_ack_failure_is_not_retried(cluster):
    key = unique("ack")
    tid = async_task(f"{TASKS}.fail", key, ack_failure=True)
    cluster.settle(lambda: runs(key) >= 2 or (Failure.objects.filter(id=tid).exists()
                                              and tid not in cluster.queued_ids()),
                   "the failure acknowledged")
    assert runs(key) == 1
    assert Failure.objects.get(id=tid).attempt_count == 1


def test_max_attempts_from_q_cluster(cluster):
    """Q_CLUSTER's max_attempts (2 here) bounds the attempts of a failing task; a task's own
    q_options={"max_attempts": 1} is not an option of django-q2's (async_task drops it):
    the global bound applies to it as well, on both brokers."""
    plain, own = unique("attempts"), unique("own-attempts")
    tids = [async_task(f"{TASKS}.fail", plain),
            async_task(f"{TASKS}.fail", own, q_options={"max_attempts": 1})]
    cluster.settle(lambda: runs(plain) >= 2 and runs(own) >= 2
                   and not set(tids) & cluster.queued_ids(), "two attempts each", timeout=45)
    assert (runs(plain), runs(own)) == (2, 2)
    assert [Failure.objects.get(id=t).attempt_count for t in tids] == [2, 2]


# --- the queue and the broker --------------------------------------------------------------


def test_queue_size(cluster):
    idle = get_broker(IDLE_QUEUE)
    assert queue_size(broker=idle) == 0
    with transaction.atomic():
        for i in range(3):
            async_task(f"{TASKS}.add", i, i, cluster=IDLE_QUEUE)
        assert queue_size(broker=idle) == 3  # inside the producer's transaction
    assert queue_size(broker=idle) == 3
    assert idle.lock_size() == 0
    idle.purge_queue()
    assert queue_size(broker=idle) == 0


# --- django-q2's admin pages ---------------------------------------------------------------


@pytest.fixture
def admin(broker) -> Client:
    from users.models import User

    user, _ = User.objects.get_or_create(username="conformance-admin",
                                         defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    return client


def test_admin_changelists(cluster, admin):
    name = unique("admin-ok")
    ok = async_task(f"{TASKS}.add", 1, 1, task_name=name)
    bad = async_task(f"{TASKS}.fail", unique("x"), task_name=unique("admin-bad"),
                     ack_failure=True)
    schedule(f"{TASKS}.run", "admin", name=unique("admin-schedule"),
             next_run=timezone.now() + timedelta(days=1))
    assert result(ok, wait=WAIT_MS) == 2
    assert fetch(bad, wait=WAIT_MS)
    pages = {"success": name, "failure": Task.objects.get(id=bad).name,
             "schedule": Schedule.objects.filter(name__startswith="admin-schedule")[0].name,
             "ormq": None}
    for model, shown in pages.items():
        response = admin.get(f"/admin/django_q/{model}/")
        assert response.status_code == 200, model
        if shown:
            assert shown in response.content.decode(), model
    response = admin.get(f"/admin/django_q/success/{ok}/change/")
    assert response.status_code == 200


@differs(pgbroker="a waiting task is a row of pgbroker_job, listed on pgbroker's own Jobs "
                  "page (/admin/pgbroker/job/); django-q2's Queued page lists OrmQ rows "
                  "and stays empty")
def test_admin_queued_page_lists_a_waiting_task(cluster, admin):
    name = unique("admin-queued")
    async_task(f"{TASKS}.add", 1, 1, task_name=name, cluster=IDLE_QUEUE)
    try:
        response = admin.get("/admin/django_q/ormq/")
        assert response.status_code == 200
        assert name in response.content.decode()
    finally:
        get_broker(IDLE_QUEUE).purge_queue()


