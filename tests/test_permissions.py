"""Who may do what (common.permissions), for every admin page, dashboard view and POST
control: anonymous -> the login page; staff without a permission -> 403; Viewers look;
Operators also operate; superusers may do everything. No GET writes anything, every POST needs
its CSRF token, and a retry submitted twice retries once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import Failure, OrmQ, Schedule, Task
from django_q.signing import SignedPackage

from common.permissions import OPERATORS, VIEWERS, can_operate, can_view_dashboard
from dashboard import registry
from experiments.models import Experiment
from experiments.models import Status as ExperimentStatus
from faults.models import Fault
from jobs.models import JobRun
from jobs.queues import redis_queue
from jobs.selectors import queued_tasks, uses_pgbroker
from outbox.models import OutboxMessage
from pgbroker.models import Cluster, Job
from sagas.models import Saga, SagaLog, State
from tests.helpers import ensure_groups
from travel.models import CarBooking, FlightBooking, HotelBooking
from users.models import EmailSend, User

ROLES = ["anonymous", "staff", "viewer", "operator", "superuser"]
NOBODY = "nobody"  # a page nobody may open (a log has no add page)
LOGIN = "/admin/login/"


# --- the world: one row of every model, and one user per role -------------------------------

def package(task_id: str = "t1") -> str:
    return SignedPackage.dumps({"id": task_id, "name": "n", "args": (), "kwargs": {"user_id": 7},
                                "func": "users.tasks.send_welcome_email"})


def make_world() -> dict:
    ensure_groups()
    now = timezone.now()
    users = {
        "staff": User.objects.create(username="perm-staff", is_staff=True),
        "viewer": User.objects.create(username="perm-viewer", is_staff=True),
        "operator": User.objects.create(username="perm-operator", is_staff=True),
        "superuser": User.objects.create(username="perm-root", is_staff=True,
                                         is_superuser=True),
    }
    users["viewer"].groups.add(Group.objects.get(name=VIEWERS))
    users["operator"].groups.add(Group.objects.get(name=OPERATORS))
    saga = Saga.objects.create(kind="trip", state=State.STUCK, payload={"customer": "zed"},
                               lease_until=now)
    SagaLog.objects.create(saga=saga, seq=1, event="SAGA_START", pid=1)
    objects = {
        "users.user": users["staff"],
        "auth.group": Group.objects.get(name=VIEWERS),
        "users.emailsend": EmailSend.objects.create(user=users["staff"], key="welcome-perm",
                                                    message_id="<perm>"),
        "outbox.outboxmessage": OutboxMessage.objects.create(
            topic="user.welcome_email", payload={"user_id": 1}, attempts=5, dead_at=now,
            last_error="boom"),
        # scoped: an uncommitted global row would make the side connection's arm wait for us
        "faults.fault": Fault.objects.create(point="email.send", scope="perm-scope"),
        "jobs.jobrun": JobRun.objects.create(key="perm-run", func="users.tasks.send_welcome_email",
                                             kwargs={"user_id": 7}, attempts=5, parked_at=now),
        "pgbroker.job": Job.objects.create(queue="reliable", payload=package(), parked_at=now,
                                           attempts=5, last_error="gave up"),
        "pgbroker.cluster": Cluster.objects.create(owner=42, queue="reliable", host="h", pid=99),
        "sagas.saga": saga,
        "travel.hotelbooking": HotelBooking.objects.create(saga_id=saga.pk, step="hotel",
                                                           status="booked", times_booked=1),
        "travel.carbooking": CarBooking.objects.create(saga_id=saga.pk, step="car",
                                                       status="booked", times_booked=1),
        "travel.flightbooking": FlightBooking.objects.create(saga_id=saga.pk, step="flight",
                                                             status="booked", times_booked=1),
        "experiments.experiment": Experiment.objects.create(
            preset="talk", params={"script": "talk", "seed": 1}, seed=1,
            status=ExperimentStatus.DONE, started_at=now, finished_at=now),
        "django_q.schedule": Schedule.objects.create(name="perm-schedule",
                                                     func="jobs.tasks.cleanup_task_results"),
        "django_q.success": Task.objects.create(
            id="s1", name="perm-success", func="users.tasks.send_welcome_email",
            kwargs={"user_id": 7}, started=now, stopped=now, success=True),
        "django_q.failure": Task.objects.create(
            id="f1", name="perm-failure", func="users.tasks.send_welcome_email",
            kwargs={"user_id": 8}, started=now, stopped=now, success=False, result="boom"),
        "django_q.ormq": OrmQ.objects.create(key="reliable", payload=package("q1"),
                                             lock=now),
    }
    return {"users": users, "objects": objects}


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Made once for the module, in a transaction that is rolled back after it (as Django's
    TestCase.setUpTestData does); each test runs in a savepoint inside it."""
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        # durable blocks in the code under test stay allowed (a private flag of Django's
        # Atomic, which TestCase sets: the stubs do not declare it)
        atomic._from_testcase = True  # type: ignore[attr-defined]
        atomic.__enter__()
        try:
            yield make_world()
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


@pytest.fixture
def as_role(world, db, settings, monkeypatch):
    """A client signed in as a role (anonymous: not signed in)."""
    settings.CLUSTER_WAIT_SECONDS = 0  # "relay/recover now" without a cluster: answer at once
    monkeypatch.setattr("experiments.services.launch", lambda experiment: 0)  # no real run

    def make(role: str, **kwargs) -> Client:
        client = Client(**kwargs)
        if role != "anonymous":
            client.force_login(world["users"][role])
        return client

    return make


# --- "did anything change?": every table's rows, and Redis ----------------------------------

def fingerprint() -> dict:
    """A digest of every row of every table (the test's own transaction sees its uncommitted
    rows, and the side connection's committed ones), and the size of the test Redis."""
    tables = connection.introspection.table_names()
    sql = " UNION ALL ".join(
        f"SELECT %s, md5(coalesce(string_agg(md5(t::text), '' ORDER BY md5(t::text)), '')) "
        f"FROM {connection.ops.quote_name(name)} t" for name in tables)
    with connection.cursor() as cur:
        cur.execute(sql, tables)
        rows = dict(cur.fetchall())
    rows["redis keys"] = redis_queue().connection.dbsize()
    return rows


def changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


# --- the matrix -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    url: Callable[[dict], str]
    allowed: str  # the least role that may: viewer < operator < superuser; NOBODY
    method: str = "get"
    data: dict = field(default_factory=dict)
    ok: int = 200  # the status for a role that may (a POST redirects)

    def expected(self, role: str) -> int:
        if role == "anonymous":
            return 302  # to the login page
        if self.allowed != NOBODY and ROLES.index(role) >= ROLES.index(self.allowed):
            return self.ok
        return 403


# Per registered ModelAdmin: the least role for (list, add, change, delete). Every model
# registered in the admin must be here (test_every_registered_model_is_in_the_matrix).
PAGES = {
    "users.user": ("viewer", "superuser", "viewer", "superuser"),
    "auth.group": ("superuser", "superuser", "superuser", "superuser"),
    "users.emailsend": ("viewer", NOBODY, "viewer", NOBODY),
    "outbox.outboxmessage": ("viewer", NOBODY, "viewer", NOBODY),
    "faults.fault": ("viewer", NOBODY, "viewer", NOBODY),
    "jobs.jobrun": ("viewer", NOBODY, "viewer", NOBODY),
    "pgbroker.job": ("viewer", NOBODY, "viewer", NOBODY),
    "pgbroker.cluster": ("viewer", NOBODY, "viewer", NOBODY),
    "sagas.saga": ("viewer", NOBODY, "viewer", NOBODY),
    "travel.hotelbooking": ("viewer", NOBODY, "viewer", NOBODY),
    "travel.carbooking": ("viewer", NOBODY, "viewer", NOBODY),
    "travel.flightbooking": ("viewer", NOBODY, "viewer", NOBODY),
    "experiments.experiment": ("viewer", NOBODY, "viewer", "operator"),
    "django_q.schedule": ("viewer", "operator", "viewer", "operator"),
    "django_q.success": ("viewer", NOBODY, "viewer", "operator"),
    "django_q.failure": ("viewer", NOBODY, "viewer", "operator"),
    "django_q.ormq": ("viewer", NOBODY, "viewer", "operator"),
}


def admin_url(label: str, page: str) -> Callable[[dict], str]:
    app, model = label.split(".")

    def url(w: dict) -> str:
        args = [w["objects"][label].pk] if page in ("change", "delete") else []
        return reverse(f"admin:{app}_{model}_{page}", args=args)

    return url


def model_cases() -> list[Case]:
    return [Case(f"{label} {page}", admin_url(label, page), allowed)
            for label, roles in PAGES.items()
            for page, allowed in zip(("changelist", "add", "change", "delete"), roles,
                                     strict=True)]


def fixed(url_name: str, *args) -> Callable[[dict], str]:
    return lambda w: reverse(url_name, args=args)


CONTROL_DATA = {
    "signup": {"name": "perm-signup", "mode": "que", "fault": ""},
    "fault": {"point": "email.send", "action": "raise", "times": "1"},
    "redis": {"action": "accept-writes"},
    "trip": {"customer": "perm-trip", "fail": "", "crash": ""},
}


def view_cases() -> list[Case]:
    return [
        Case("admin index", fixed("admin:index"), "staff"),
        Case("dashboard", fixed("admin:dashboard"), "viewer"),
        Case("dashboard panels", fixed("admin:dashboard_panels"), "viewer"),
        *[Case(f"dashboard control {c.name}", fixed("admin:dashboard_control", c.name),
               "operator", "post", CONTROL_DATA.get(c.name, {}), 302)
          for c in registry.controls()],
        Case("saga start page", fixed("admin:sagas_saga_start"), "operator"),
        Case("saga start", fixed("admin:sagas_saga_start"), "operator", "post",
             CONTROL_DATA["trip"], 302),
        Case("saga recover", fixed("admin:sagas_saga_recover"), "operator", "post", {}, 302),
        Case("experiment start", fixed("admin:experiments_experiment_start"), "operator",
             "post", {"preset": "talk", "seed": "3"}, 302),
        Case("experiment repeat",
             lambda w: reverse("admin:experiments_experiment_repeat",
                               args=[w["objects"]["experiments.experiment"].pk]),
             "operator", "post", {}, 302),
        Case("faults list points", fixed("admin:faults_fault_list_points"), "operator",
             "post", {}, 302),
    ]


CASES = model_cases() + view_cases()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_who_may_open_what(as_role, world, case, role):
    client = as_role(role)
    url = case.url(world)
    before = fingerprint()
    response = getattr(client, case.method)(url, case.data)
    after = fingerprint()
    assert response.status_code == case.expected(role), (
        f"{role} {case.method.upper()} {url}: {response.status_code}, "
        f"expected {case.expected(role)}")
    if role == "anonymous":
        assert response.url.startswith(LOGIN)
    if response.status_code == 403:
        assert b"Not allowed (403)" in response.content, "the admin's styled 403 page"
    if case.method == "get" or response.status_code != case.ok:
        assert not changed(before, after), f"{role} {case.method.upper()} {url} wrote"


def test_every_registered_model_is_in_the_matrix():
    registered = {f"{m._meta.app_label}.{m._meta.model_name}" for m in admin.site._registry}
    assert registered == set(PAGES)


def test_viewers_may_view_every_project_model_and_operators_also_operate(world, db):
    project = {label for label in PAGES if not label.startswith("auth.")}
    viewer, operator = world["users"]["viewer"], world["users"]["operator"]
    for label in project:
        app, model = label.split(".")
        assert viewer.has_perm(f"{app}.view_{model}"), (
            f"Viewers lack view_{model}: give it to Viewers and Operators in a migration")
        assert operator.has_perm(f"{app}.view_{model}")
    assert (can_view_dashboard(viewer), can_operate(viewer)) == (True, False)
    assert (can_view_dashboard(operator), can_operate(operator)) == (True, True)
    staff, root = world["users"]["staff"], world["users"]["superuser"]
    assert (can_view_dashboard(staff), can_operate(staff)) == (False, False)
    assert (can_view_dashboard(root), can_operate(root)) == (True, True)
    root.is_active = False
    assert (can_view_dashboard(root), can_operate(root)) == (False, False)
    viewers = set(Group.objects.get(name=VIEWERS).permissions.values_list("codename", flat=True))
    operators = set(Group.objects.get(name=OPERATORS).permissions.values_list("codename",
                                                                              flat=True))
    assert operators - viewers == {"operate"}
    assert not {p for p in viewers if not p.startswith("view_")}


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_the_index_and_the_dashboard_link_only_to_pages_the_role_may_open(as_role, role):
    """What the admin's home page, its sidebar and the dashboard show, opens (no 403 to
    follow); a viewer's dashboard has no control."""
    import re

    client = as_role(role)
    links = set()
    for page in (reverse("admin:index"), reverse("admin:dashboard")):
        html = client.get(page).content.decode()
        links |= {u for u in re.findall(r'href="(/admin/[^"]*)"', html)
                  if "logout" not in u and "password_change" not in u}
    assert reverse("admin:dashboard") in links
    for url in sorted(links):
        assert client.get(url).status_code in (200, 302), url
    dashboard = client.get(reverse("admin:dashboard")).content.decode()
    for control in registry.controls():
        assert (f'id="{control.name}-form"' in dashboard) == (role == "operator")


def test_staff_without_permissions_see_nothing_to_open(as_role):
    page = as_role("staff").get(reverse("admin:index")).content.decode()
    assert "Open the dashboard" not in page
    assert "permission to view or edit anything" in page


def test_the_403_page_is_the_admins(as_role):
    response = as_role("staff").get(reverse("admin:dashboard"))
    page = response.content.decode()
    assert response.status_code == 403
    assert 'href="/static/admin/css/base.css"' in page
    assert "Reliable background work" in page
    assert "perm-staff" in page
    assert 'rel="icon"' in page


def test_every_page_has_a_favicon_so_the_browser_asks_for_none(as_role):
    icon = b'<link rel="icon" href="data:image/svg+xml'
    assert icon in as_role("anonymous").get(reverse("admin:login")).content
    for url in (reverse("admin:index"), reverse("admin:dashboard"),
                reverse("admin:sagas_saga_changelist")):
        assert icon in as_role("operator").get(url).content


# --- admin actions: only operators, and nothing changes for the others ----------------------

ACTIONS = [  # (model, action, object)
    ("outbox.outboxmessage", "retry_dead"),
    ("jobs.jobrun", "retry_parked"),
    ("pgbroker.job", "retry_parked"),
    ("sagas.saga", "retry_stuck"),
    ("sagas.saga", "recover_now"),
    ("faults.fault", "arm_raise_1"),
    ("faults.fault", "disarm"),
    ("django_q.failure", "resubmit_failed"),
    ("django_q.success", "run_again"),
    ("django_q.schedule", "delete_selected"),
]


@pytest.mark.parametrize("role", ["staff", "viewer"])
@pytest.mark.parametrize(("label", "action"), ACTIONS)
def test_only_operators_may_run_admin_actions(as_role, world, role, label, action):
    client = as_role(role)
    app, model = label.split(".")
    obj = world["objects"][label]
    url = reverse(f"admin:{app}_{model}_changelist")
    if role == "viewer":
        assert action not in client.get(url).content.decode()
    before = fingerprint()
    client.post(url, {"action": action, "_selected_action": [obj.pk]})
    assert not changed(before, fingerprint())


@pytest.mark.parametrize(("label", "action"), ACTIONS)
def test_operators_run_admin_actions(as_role, world, label, action):
    client = as_role("operator")
    app, model = label.split(".")
    url = reverse(f"admin:{app}_{model}_changelist")
    assert f'value="{action}"' in client.get(url).content.decode()
    response = client.post(url, {"action": action, "_selected_action": [
        world["objects"][label].pk], "post": "yes"})
    assert response.status_code == 302


def test_operators_edit_django_q2_schedules_and_viewers_only_see_them(as_role, world):
    schedule = world["objects"]["django_q.schedule"]
    url = reverse("admin:django_q_schedule_change", args=[schedule.pk])
    viewer = as_role("viewer")
    viewer_page = viewer.get(url).content.decode()
    assert 'name="func"' not in viewer_page  # read-only
    data = {"name": "perm-schedule", "func": "jobs.tasks.cleanup_task_results",
            "schedule_type": "D", "repeats": "-1", "next_run_0": "2030-01-01",
            "next_run_1": "00:00:00", "cluster": "", "hook": "", "args": "", "kwargs": "",
            "minutes": "", "cron": "", "intended_date_kind": "", "task": ""}
    before = fingerprint()
    assert viewer.post(url, {**data, "func": "os.system"}).status_code == 403
    assert not changed(before, fingerprint())
    response = as_role("operator").post(url, {**data, "repeats": "3"})
    assert response.status_code == 302, response.content.decode()[-3000:]
    schedule.refresh_from_db()
    assert schedule.repeats == 3


# --- CSRF on every POST ---------------------------------------------------------------------

POSTS = [c for c in CASES if c.method == "post"]


@pytest.mark.parametrize("case", POSTS, ids=[c.name for c in POSTS])
def test_every_post_needs_its_csrf_token(as_role, world, case):
    client = as_role("superuser", enforce_csrf_checks=True)
    url = case.url(world)
    before = fingerprint()
    assert client.post(url, case.data).status_code == 403
    assert not changed(before, fingerprint())
    client.get(reverse("admin:dashboard"))  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    assert client.post(url, {**case.data, "csrfmiddlewaretoken": token}).status_code == case.ok


def test_admin_actions_need_the_csrf_token_too(as_role, world):
    client = as_role("superuser", enforce_csrf_checks=True)
    message = world["objects"]["outbox.outboxmessage"]
    url = reverse("admin:outbox_outboxmessage_changelist")
    data = {"action": "retry_dead", "_selected_action": [message.pk]}
    assert client.post(url, data).status_code == 403
    message.refresh_from_db()
    assert message.dead_at is not None
    client.get(url)
    data["csrfmiddlewaretoken"] = client.cookies["csrftoken"].value
    assert client.post(url, data).status_code == 302
    message.refresh_from_db()
    assert message.dead_at is None


# --- double submits -------------------------------------------------------------------------

def test_retrying_twice_retries_once(as_role, world):
    """A double click (or two people) on each retry action: the second finds nothing left to
    retry, and each job is enqueued once."""
    client = as_role("operator")
    objects = world["objects"]
    for label, action in [("jobs.jobrun", "retry_parked"), ("outbox.outboxmessage", "retry_dead"),
                          ("sagas.saga", "retry_stuck"), ("pgbroker.job", "retry_parked"),
                          ("django_q.failure", "resubmit_failed")]:
        app, model = label.split(".")
        url = reverse(f"admin:{app}_{model}_changelist")
        for _ in range(2):
            client.post(url, {"action": action, "_selected_action": [objects[label].pk]})
    queued = sorted((t.func, tuple(sorted(t.kwargs.items()))) for t in queued_tasks())
    assert queued == sorted([
        ("sagas.tasks.run_saga", (("saga_id", objects["sagas.saga"].pk),)),
        ("users.tasks.send_welcome_email", (("user_id", 7),)),  # the parked run, once
        ("users.tasks.send_welcome_email", (("user_id", 7),)),  # the parked queue job, once
        ("users.tasks.send_welcome_email", (("user_id", 8),)),  # the failed task, once
    ])
    message = OutboxMessage.objects.get(pk=objects["outbox.outboxmessage"].pk)
    assert (message.state, message.attempts) == ("pending", 0)
    job = Job.objects.get(pk=objects["pgbroker.job"].pk)
    assert job.last_error.count("retried from the admin") == 1
    assert not Failure.objects.filter(pk="f1").exists()


def test_a_failed_task_the_queue_still_holds_is_not_resubmitted(as_role, world):
    if uses_pgbroker():  # its retry is waiting in the queue
        Job.objects.create(queue="reliable", payload=package("f1"))
    else:
        OrmQ.objects.create(key="reliable", payload=package("f1"), lock=timezone.now())
    response = as_role("operator").post(
        reverse("admin:django_q_failure_changelist"),
        {"action": "resubmit_failed", "_selected_action": ["f1"]}, follow=True)
    assert "1 left alone: the queue still holds them" in response.content.decode()
    assert Failure.objects.filter(pk="f1").exists()


# --- what a person sees: forms keep what they submitted, times to the second ----------------

def test_the_dashboard_forms_keep_what_was_submitted(as_role):
    client = as_role("operator")
    page = client.get(reverse("admin:dashboard")).content.decode()
    assert 'name="customer" value="alice"' in page
    start = page.index('id="trip-form"')
    trip_form = page[start:page.index("</form>", start)]
    assert '<option value="" selected>none</option>' in trip_form, "a first trip succeeds"
    client.post(reverse("admin:dashboard_control", args=["signup"]),
                {"name": "perm-kate", "mode": "outbox", "fault": "fail:part2"})
    client.post(reverse("admin:dashboard_control", args=["trip"]),
                {"customer": "perm-bob", "fail": "", "crash": "hotel"})
    page = client.get(reverse("admin:dashboard")).content.decode()
    assert 'value="perm-kate"' in page
    assert '<option value="outbox" selected>' in page
    assert '<option value="fail:part2" selected>' in page
    assert 'value="perm-bob"' in page
    assert '<option value="hotel" selected>hotel</option>' in page


def test_times_where_timing_matters_show_seconds(as_role, world):
    client = as_role("viewer")
    at = timezone.localtime(timezone.now().replace(microsecond=0) - timedelta(seconds=7))
    message = world["objects"]["outbox.outboxmessage"]
    OutboxMessage.objects.filter(pk=message.pk).update(created_at=at)
    seconds = at.strftime("%Y-%m-%d %H:%M:%S")
    assert seconds in client.get(reverse("admin:outbox_outboxmessage_changelist")).content.decode()
    assert seconds in client.get(reverse("admin:outbox_outboxmessage_change",
                                         args=[message.pk])).content.decode()
    saga = world["objects"]["sagas.saga"]
    Saga.objects.filter(pk=saga.pk).update(lease_until=at, created_at=at - timedelta(seconds=2))
    assert seconds in client.get(reverse("admin:sagas_saga_changelist")).content.decode()
    SagaLog.objects.filter(saga=saga).update(at=at)
    page = client.get(reverse("admin:sagas_saga_change", args=[saga.pk])).content.decode()
    assert f"{seconds}.000" in page  # the log inline
    assert "+2.000 s" in page  # since the saga started: in the inline and on the timeline
    assert f"<title>at {at:%H:%M:%S}.000</title>+2.000 s" in page  # the timeline
    for name in ("jobrun", "job"):
        app = "jobs" if name == "jobrun" else "pgbroker"
        page = client.get(reverse(f"admin:{app}_{name}_changelist")).content.decode()
        assert " a.m." not in page
        assert " p.m." not in page
    run = world["objects"]["jobs.jobrun"]
    JobRun.objects.filter(pk=run.pk).update(parked_at=at)
    assert seconds in client.get(reverse("admin:jobs_jobrun_changelist")).content.decode()
    Job.objects.filter(pk=world["objects"]["pgbroker.job"].pk).update(created_at=at)
    assert seconds in client.get(reverse("admin:pgbroker_job_changelist")).content.decode()


def test_the_fault_page_lists_declared_points_without_writing(as_role):
    from faults.points import POINTS

    Fault.objects.all().delete()
    viewer = as_role("viewer")
    before = fingerprint()
    page = viewer.get(reverse("admin:faults_fault_changelist")).content.decode()
    assert not changed(before, fingerprint())
    for point in POINTS:
        assert point in page
    assert "List them" not in page
    assert "List them" in as_role("operator").get(
        reverse("admin:faults_fault_changelist")).content.decode()
