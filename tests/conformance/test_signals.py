"""django-q2's signals, received in the process that sends them: pre_enqueue in the producer
(here, the test process), pre_execute in the worker that runs the task, post_execute in the
process that saves its result (django-q2's monitor; pgbroker's dispatcher). The SIGNALS
cluster (conftest.py) has the receivers of tasks.py connected in every process."""

from __future__ import annotations

import os

import pytest
from django_q.tasks import async_task, fetch

from tests.conformance import tasks
from tests.conformance.conftest import SIGNALS, TASKS, events, unique

# conformance: its own run in make test's second pass (it mostly waits on its clusters)
pytestmark = [pytest.mark.cluster, pytest.mark.any_broker, pytest.mark.conformance]


@pytest.fixture
def receivers():
    tasks.connect_signals()  # in this process too: it enqueues
    try:
        yield
    finally:
        tasks.disconnect_signals()


def test_signals_in_their_processes(clusters, receivers):
    key = unique("signals")
    tid = async_task(f"{TASKS}.run", key, cluster=SIGNALS)
    cluster = clusters.signals
    cluster.settle(lambda: events(kind="post_execute", key=tid), "post_execute")
    (enqueued,) = events(kind="pre_enqueue", key=tid)
    (executed,) = events(kind="pre_execute", key=tid)
    (ran,) = events(kind="run", key=key)
    (done,) = events(kind="post_execute", key=tid)
    assert enqueued.id < executed.id < ran.id < done.id
    assert enqueued.pid == os.getpid()
    assert executed.pid == ran.pid, "pre_execute in the worker that runs the task"
    assert executed.detail == "run"  # with the function itself
    assert done.pid not in (os.getpid(), ran.pid), "post_execute where the result is saved"
    assert done.detail == f"True:{key}"
    assert fetch(tid).success
    cluster.wait_drained()
