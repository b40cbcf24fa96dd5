"""django-q2's broker interface, called directly on each broker (what django-q2's own cluster
and tools call), on a queue no cluster consumes."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import cache
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.signing import SignedPackage

from tests.conformance.conftest import TASKS, differs, unique

# conformance: its own run in make test's second pass (it mostly waits on its clusters)
pytestmark = [pytest.mark.cluster, pytest.mark.any_broker, pytest.mark.conformance]

DIRECT = "conformance-direct"


def package(name: str) -> str:
    return SignedPackage.dumps({"id": uuid.uuid4().hex, "name": name, "func": f"{TASKS}.add",
                                "args": (1, 2), "kwargs": {}, "started": timezone.now()})


@pytest.fixture
def direct(broker):
    queue = get_broker(DIRECT)
    queue.purge_queue()
    yield queue
    queue.purge_queue()


def test_enqueue_sizes_acknowledge_fail_delete_purge(direct):
    assert direct.ping() is True
    assert isinstance(direct.info(), str)
    assert direct.info()
    ids = [direct.enqueue(package(f"task{i}")) for i in range(4)]
    assert len(set(ids)) == 4
    assert None not in ids
    assert (direct.queue_size(), direct.lock_size()) == (4, 0)
    direct.acknowledge(ids[0])
    assert direct.queue_size() == 3
    direct.fail(ids[1])
    assert direct.queue_size() == 2
    direct.delete(ids[2])
    assert direct.queue_size() == 1
    direct.purge_queue()
    assert direct.queue_size() == 0
    direct.enqueue(package("again"))
    direct.delete_queue()
    assert direct.queue_size() == 0


@differs(pgbroker="dequeue() refuses (NotImplementedError): pgbroker's jobs are claimed by "
                  "its own cluster, with the owner key that makes them safe to take back; "
                  "django-q2's cluster and tools cannot consume it")
def test_dequeue_leases_then_acknowledge_or_fail(direct):
    names = {unique("a"), unique("b")}
    ids = [direct.enqueue(package(name)) for name in sorted(names)]
    got = direct.dequeue()  # up to Conf.BULK (50 in this process)
    assert sorted(ack for ack, _ in got) == sorted(ids)
    assert {SignedPackage.loads(payload)["name"] for _, payload in got} == names
    assert (direct.queue_size(), direct.lock_size()) == (0, 2), "leased, not ready"
    direct.acknowledge(got[0][0])
    assert direct.lock_size() == 1
    direct.fail(got[1][0])
    assert direct.lock_size() == 0


def test_dequeue_works_or_refuses_in_one_line(direct):
    """Issue 19: a method the broker cannot honour refuses in one line that says to run
    pgbroker's qcluster."""
    direct.enqueue(package(unique("refused")))
    try:
        got, refusal = direct.dequeue(), None
    except Exception as e:  # noqa: BLE001 (whatever it raises, it must say why in one line)
        got, refusal = None, str(e)
    if refusal is None:
        assert len(got) == 1
    else:
        assert "\n" not in refusal
        assert "qcluster" in refusal


def test_stats_in_the_cache(direct):
    key = f"{Conf.Q_STAT}:{unique('conformance')}"
    try:
        direct.set_stat(key, "its value", 5)
        assert direct.get_stat(key) == "its value"
        assert "its value" in direct.get_stats(f"{Conf.Q_STAT}:*")
    finally:
        cache.delete(key)
