"""/metrics, scraped as Prometheus scrapes it and read back by prometheus_client's own parsers:
each figure follows the rows the test writes (the queue's states, Redis, the outbox, the
sagas, the dashboard's checks, the jobs finished lately), who may read it, and a source that
fails leaves the others served."""

from __future__ import annotations

import base64
import io
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now
from django.test import override_settings
from django_q.models import Task
from django_q.tasks import async_task
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from common.db import db_now
from common.permissions import VIEWERS
from jobs.queues import redis_queue
from jobs.selectors import uses_pgbroker
from outbox import services as outbox
from outbox.models import OutboxMessage
from pgbroker.models import Job
from sagas.models import Saga, State, Style
from tests.helpers import ensure_groups, wait_until
from users.models import User
from users.welcome import WELCOME_TOPIC

TOKEN = "t0ken-" + "x" * 40


def samples(text: str, parse=text_string_to_metric_families) -> list:
    return [s for family in parse(text) for s in family.samples]


def value(found: list, name: str, **labels: str) -> float:
    """The one sample called `name` whose labels include `labels`."""
    matches = [s.value for s in found
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


def scrape(client, **headers) -> list:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(response.content.decode())


@pytest.fixture
def viewer(db, client):
    client.force_login(User.objects.create_superuser(username="metrics-admin", password="pw"))
    return client


def queue(found: list, state: str, store: str = "postgres") -> float:
    return value(found, "reliable_queue_jobs", store=store, state=state)


@pytest.mark.usefixtures("db")
def test_the_queue_s_states_follow_its_rows(viewer):
    if not uses_pgbroker():
        pytest.skip("pgbroker's states (Q_BROKER=orm has a lease instead)")
    empty = scrape(viewer)
    assert [queue(empty, s) for s in ("pending", "claimed", "retrying", "parked")] == [0] * 4
    for n in range(4):
        async_task("math.floor", n)
    found = scrape(viewer)
    assert queue(found, "pending") == 4
    assert value(found, "reliable_queue_oldest_pending_seconds", store="postgres") < 5

    claimed, retrying, parked, pending = Job.objects.order_by("id")
    Job.objects.filter(pk=claimed.pk).update(owner=42, claimed_at=F("run_at") + timedelta(
        seconds=0.2))
    Job.objects.filter(pk=retrying.pk).update(run_at=Now() + timedelta(hours=1))
    Job.objects.filter(pk=parked.pk).update(parked_at=Now())
    Job.objects.filter(pk=pending.pk).update(run_at=Now() - timedelta(seconds=30))
    found = scrape(viewer)
    assert [queue(found, s) for s in ("pending", "claimed", "retrying", "parked")] == [1] * 4
    assert 30 <= value(found, "reliable_queue_oldest_pending_seconds", store="postgres") < 35
    # the claimed job had been due 0.2 s when it was claimed: in the 0.25 s bucket, not below
    wait = {s.labels["le"]: s.value for s in found
            if s.name == "reliable_queue_claim_wait_seconds_bucket"}
    assert (wait["0.1"], wait["0.25"], wait["+Inf"]) == (0, 1, 1)


@pytest.mark.usefixtures("db")
def test_redis_the_outbox_and_the_sagas_follow_their_rows(viewer):
    conn = redis_queue().connection
    conn.rpush(redis_queue().list_key, b"one", b"two")
    with transaction.atomic():
        for user_id in (1, 2, 3):
            outbox.publish(topic=WELCOME_TOPIC, payload={"user_id": user_id})
    first, second, _ = OutboxMessage.objects.order_by("id")
    OutboxMessage.objects.filter(pk=first.pk).update(dead_at=Now())
    OutboxMessage.objects.filter(pk=second.pk).update(created_at=Now() - timedelta(seconds=10))
    Saga.objects.create(kind="trip", style=Style.CHOREOGRAPHED, state=State.COMPLETED)
    Saga.objects.create(kind="trip", style=Style.ORCHESTRATED, state=State.RUNNING)

    found = scrape(viewer)
    assert value(found, "reliable_redis_up") == 1
    assert queue(found, "pending", store="redis") == 2
    assert value(found, "reliable_outbox_messages", state="pending") == 2
    assert value(found, "reliable_outbox_messages", state="dead") == 1
    assert 10 <= value(found, "reliable_outbox_oldest_pending_seconds") < 60
    assert value(found, "reliable_sagas", state="completed", style="choreographed") == 1
    assert value(found, "reliable_sagas", state="running", style="orchestrated") == 1
    assert value(found, "reliable_sagas", state="completed", style="orchestrated") == 0
    # a completed saga with nothing booked breaks a promise: the dashboard's check says so
    assert value(found, "reliable_check_findings", check="saga_completed_but_not_booked") == 1
    assert value(found, "reliable_check_status", check="saga_completed_but_not_booked",
                 status="violation") == 1
    assert value(found, "reliable_check_status", check="flights_booked_twice",
                 status="ok") == 1
    assert {s.labels["source"]: s.value for s in found
            if s.name == "reliable_metrics_source_up"} == {
        "postgres": 1, "redis": 1, "jobs": 1, "outbox": 1, "checks": 1, "rows": 1}


def finished(n: int, *, cluster: str, ok: bool, ran: float, ago: float) -> None:
    now = db_now()
    Task.objects.bulk_create(
        Task(id=uuid.uuid4().hex, name=f"t{i}", func="math.floor", cluster=cluster, success=ok,
             started=now - timedelta(seconds=ago + ran), stopped=now - timedelta(seconds=ago))
        for i in range(n))


@pytest.mark.usefixtures("db")
def test_the_jobs_finished_lately_and_how_long_they_ran(viewer):
    finished(2, cluster="reliable", ok=True, ran=0.02, ago=5)
    finished(1, cluster="redis", ok=False, ran=2.0, ago=30)
    finished(7, cluster="reliable", ok=True, ran=0.02, ago=7200)  # before the window
    found = scrape(viewer)
    assert value(found, "reliable_jobs_window_seconds") == 60
    assert value(found, "reliable_jobs_finished", cluster="reliable", outcome="success") == 2
    assert value(found, "reliable_jobs_finished", cluster="reliable", outcome="failure") == 0
    assert value(found, "reliable_jobs_finished", cluster="redis", outcome="failure") == 1
    runs = {s.labels["le"]: s.value for s in found
            if s.name == "reliable_job_run_seconds_bucket" and s.labels["cluster"] == "reliable"}
    assert (runs["0.01"], runs["0.025"], runs["+Inf"]) == (0, 2, 2)
    assert value(found, "reliable_job_run_seconds_gsum", cluster="redis") == pytest.approx(2.0)


@pytest.mark.usefixtures("db")
@override_settings(METRICS_WINDOW_JOBS=100)
def test_a_busy_window_is_read_up_to_its_newest_jobs_and_says_the_span_they_cover(viewer):
    finished(100, cluster="reliable", ok=True, ran=0.001, ago=2)
    finished(50, cluster="reliable", ok=True, ran=0.001, ago=40)
    found = scrape(viewer)
    assert value(found, "reliable_jobs_finished", cluster="reliable", outcome="success") == 100
    assert 2 <= value(found, "reliable_jobs_window_seconds") < 40


def test_counters_kept_by_postgresql_and_the_tallies_only_grow(transactional_db, client):
    """Jobs enqueued and acknowledged are the queue table's inserted and deleted rows, as
    PostgreSQL counts them for every table: free, monotonic, flushed within a second or so."""
    if not uses_pgbroker():
        pytest.skip("the PostgreSQL queue's table is pgbroker's here")
    client.force_login(User.objects.create_superuser(username="metrics-admin", password="pw"))
    before = scrape(client)
    enqueued = value(before, "reliable_queue_enqueued_total")
    acknowledged = value(before, "reliable_queue_acknowledged_total")
    with transaction.atomic():
        for n in range(3):
            async_task("math.floor", n)
    first = Job.objects.order_by("id").first()
    assert first is not None
    first.delete()  # as an acknowledgement does
    wait_until(lambda: value(scrape(client), "reliable_queue_enqueued_total") == enqueued + 3,
               timeout=30, message="PostgreSQL's statistics to count the 3 inserts")
    wait_until(lambda: value(scrape(client), "reliable_queue_acknowledged_total")
               == acknowledged + 1, timeout=30, message="the delete to be counted")


@pytest.mark.usefixtures("db")
def test_openmetrics_when_asked_with_the_window_as_a_gauge_histogram(viewer):
    response = viewer.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(response.content.decode())}
    assert families["reliable_job_run_seconds"].type == "gaugehistogram"
    assert families["reliable_outbox_published"].type == "counter"


@pytest.mark.usefixtures("db")
def test_who_may_read_it(client):
    assert client.get("/metrics").status_code == 401, "anonymous, no token set"
    with override_settings(METRICS_TOKEN=TOKEN):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer " + TOKEN[:-1] + "y"
                          ).status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Basic !!").status_code == 401
        scrape(client, HTTP_AUTHORIZATION="Bearer " + TOKEN)
        basic = base64.b64encode(f"prometheus:{TOKEN}".encode()).decode()
        scrape(client, HTTP_AUTHORIZATION="Basic " + basic)
    ensure_groups()
    viewer = User.objects.create_user(username="vera", password="pw")
    viewer.groups.add(Group.objects.get(name=VIEWERS))
    client.force_login(viewer)
    assert client.get("/metrics").status_code == 403, "a viewer without staff status"
    staff = User.objects.create_user(username="staff", password="pw", is_staff=True)
    client.force_login(staff)
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response.content == b"you lack staff status or the dashboard's view permission\n"
    staff.groups.add(Group.objects.get(name=VIEWERS))
    scrape(client)
    assert client.post("/metrics").status_code == 405


@pytest.mark.usefixtures("db")
def test_a_source_that_fails_is_left_out_and_the_rest_is_served(viewer, caplog):
    with override_settings(METRICS_ROW_COUNTS={"reliable_nothing": ("nope.Nope", ["state"])}):
        found = scrape(viewer)
        scrape(viewer)
    up = {s.labels["source"]: s.value for s in found if s.name == "reliable_metrics_source_up"}
    assert up.pop("rows") == 0
    assert set(up.values()) == {1}
    assert not [s for s in found if s.name == "reliable_nothing"]
    assert value(found, "reliable_redis_up") == 1
    said = [r.getMessage() for r in caplog.records if "metrics: reading rows failed" in
            r.getMessage()]
    assert len(said) == 1, "said once, not at every scrape"


def test_the_row_counts_setting_is_checked():
    bad = {"reliable sagas": ("sagas.Saga", ["state"]), "x": ("sagas.Nope", ["state"]),
           "y": ("sagas.Saga", ["kind"]), "z": ("sagas.Saga", "state")}
    with override_settings(METRICS_ROW_COUNTS=bad), pytest.raises(SystemCheckError) as e:
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
    said = str(e.value)
    assert said.count("reliable.E020") == 4
    assert "'reliable sagas' is not a Prometheus metric name" in said
    assert "sagas.Saga.kind has no choices" in said
