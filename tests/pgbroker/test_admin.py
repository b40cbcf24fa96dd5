"""The queue in the admin: every job's state and, when it is not running, why."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.signing import SignedPackage

from pgbroker import selectors, services
from pgbroker.models import Cluster, Job
from users.models import User

pytestmark = pytest.mark.skipif(
    not __import__("jobs.selectors").selectors.uses_pgbroker(), reason="pgbroker's admin")


def job(**fields) -> Job:
    package = SignedPackage.dumps({"id": "x", "name": "n", "func": "users.tasks.send_welcome_email",
                                   "args": (), "kwargs": {"user_id": 7}})
    return Job.objects.create(queue="reliable", payload=package, **fields)


@pytest.fixture
def root(db, client):
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    return client


def why(j: Job) -> str:
    (view,) = selectors.job_views(Job.objects.filter(pk=j.pk))
    return f"{view.state}: {view.why}"


def test_each_state_says_why_in_words(db, settings):
    now = timezone.now()
    ready = job()
    retrying = job(run_at=now + timedelta(seconds=30), attempts=2,
                   last_error="attempt 2 failed: ValueError: boom")
    parked = job(parked_at=now, attempts=5, last_error="gave up after 5 attempts; the last: x")
    orphan = job(owner=42, claimed_at=now, attempts=1)
    assert why(ready).startswith("ready: ready since")
    assert why(ready).endswith("no live worker (is a cluster running?)")
    assert why(retrying).startswith(f"retrying: retry at {selectors.clock(retrying.run_at)}, "
                                    "attempt 3 of 5")
    assert "last: attempt 2 failed: ValueError: boom" in why(retrying)
    assert why(parked).startswith("parked: parked at")
    assert "after 5 attempt(s): gave up after 5 attempts" in why(parked)
    assert why(orphan).startswith("orphaned: its cluster is gone")

    cluster = Cluster.objects.create(owner=42, queue="reliable", host="h", pid=99, workers=[
        {"pid": 1234, "job": orphan.pk, "since": 1_700_000_000.0, "next": [ready.pk]}])
    assert why(orphan).startswith("running: running in worker 1234 since")
    assert why(ready).endswith("next for a free worker")
    Job.objects.filter(pk=ready.pk).update(owner=cluster.owner)
    assert why(ready).startswith("prefetched: claimed by cluster 2a (pid 99 on h)")


def test_the_job_list_shows_states_and_filters_by_them(root):
    job(parked_at=timezone.now(), attempts=5, last_error="gave up")
    job()
    page = root.get(reverse("admin:pgbroker_job_changelist")).content.decode()
    assert "users.tasks.send_welcome_email(user_id=7)" in page
    assert "no live worker" in page
    parked = root.get(reverse("admin:pgbroker_job_changelist") + "?state=parked").content
    assert parked.decode().count("users.tasks.send_welcome_email(user_id=7)") == 1


def test_retrying_parked_jobs_twice_retries_them_once(root):
    parked = job(parked_at=timezone.now(), attempts=5, last_error="gave up")
    ready = job()
    url = reverse("admin:pgbroker_job_changelist")
    for _ in range(2):  # a double submit
        root.post(url, {"action": "retry_parked", "_selected_action": [parked.pk, ready.pk]})
    parked.refresh_from_db()
    assert (parked.parked_at, parked.attempts) == (None, 0)
    assert parked.last_error == "retried from the admin by root after: gave up"
    assert services.retry_parked(jobs=Job.objects.all()) == 0


def test_staff_without_superuser_cannot_retry(db, client):
    client.force_login(User.objects.create_user(username="s", password="pw", is_staff=True))
    parked = job(parked_at=timezone.now(), attempts=5)
    response = client.post(reverse("admin:pgbroker_job_changelist"),
                           {"action": "retry_parked", "_selected_action": [parked.pk]})
    assert response.status_code in (302, 403)
    parked.refresh_from_db()
    assert parked.parked_at is not None
