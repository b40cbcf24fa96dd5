import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db.models.functions import Now
from django.urls import reverse

from dashboard.selectors import consistency_checks
from faults import services as faults
from faults.models import Fault
from jobs.selectors import queued_tasks
from sagas.models import Saga, State
from travel.models import HotelBooking
from users import services as users
from users.models import EmailSend, User
from users.selectors import signup_stats


@pytest.fixture
def viewer(db, client):
    """Staff in the Viewers group (common.permissions): the dashboard, read-only."""
    from django.contrib.auth.models import Group

    user = User.objects.create_user(username="staffer", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Viewers"))
    client.force_login(user)
    return client


CONTROLS = ["signup", "fault", "relay", "trip", "recover"]


def test_viewers_see_the_dashboard_and_its_panels(viewer):
    page = viewer.get(reverse("admin:dashboard"))
    assert page.status_code == 200
    assert b"Signups and welcome emails" in page.content
    assert b"You can watch." in page.content
    assert viewer.get(reverse("admin:dashboard_panels")).status_code == 200


@pytest.mark.parametrize("action", CONTROLS)
def test_viewers_get_403_for_every_control(viewer, action):
    response = viewer.post(reverse("admin:dashboard_control", args=[action]),
                          {"name": "x", "mode": "que", "point": "email.send",
                           "action": "raise", "customer": "x"})
    assert response.status_code == 403
    assert not User.objects.filter(username="x").exists()
    assert queued_tasks() == []
    assert not Fault.objects.exclude(action="").exists()
    assert not Saga.objects.exists()


def test_signed_in_non_staff_get_403(db, client):
    client.force_login(User.objects.create_user(username="plain", password="pw"))
    assert client.get(reverse("admin:dashboard")).status_code == 403
    assert client.post(reverse("admin:dashboard_control", args=["recover"])).status_code == 403


def test_anonymous_visitors_are_sent_to_the_login_page(db, client):
    response = client.get(reverse("admin:dashboard"))
    assert response.status_code == 302
    assert "/admin/login/" in response.url


def test_controls_refuse_get(admin_client):
    assert admin_client.get(reverse("admin:dashboard_control", args=["relay"])).status_code == 405


def test_a_superuser_signs_up_a_user_with_a_fault_from_the_dashboard(admin_client):
    response = admin_client.post(reverse("admin:dashboard_control", args=["signup"]),
                              {"name": "matt", "mode": "que", "fault": "crash:part2"},
                              follow=True)
    assert "Signup of matt (que) enqueued with a crash in part2." in response.content.decode()
    (job,) = queued_tasks()
    assert job.kwargs["name"] == "matt"
    armed = Fault.objects.get(scope=job.kwargs["signup_id"])
    assert (armed.point, armed.action) == ("signup.part2", "crash")


def test_bad_input_on_the_dashboard_is_a_message_not_a_crash(admin_client):
    User.objects.create_user(username="mike")
    response = admin_client.post(reverse("admin:dashboard_control", args=["signup"]),
                              {"name": "mike", "mode": "que", "fault": ""}, follow=True)
    assert "user named &#x27;mike&#x27; already exists" in response.content.decode()
    response = admin_client.post(reverse("admin:dashboard_control", args=["trip"]),
                              {"customer": "x", "fail": "boat"}, follow=True)
    assert "Not done: fail:" in response.content.decode()
    assert not Saga.objects.exists()


def test_arm_and_disarm_from_the_dashboard(admin_client):
    url = reverse("admin:dashboard_control", args=["fault"])
    admin_client.post(url, {"point": "signup.part2", "action": "raise", "times": "3"})
    assert Fault.objects.get(point="signup.part2", scope="").remaining == 3
    admin_client.post(url, {"point": "signup.part2", "action": "disarm"})
    assert not Fault.objects.get(point="signup.part2", scope="").is_armed
    admin_client.post(url, {"point": "email.send", "action": "delay", "ms": "0"})
    assert Fault.objects.get(point="email.send", scope="").delay_ms == 0, "0 ms is 0 ms"
    admin_client.post(url, {"point": "email.send", "action": "delay"})
    assert Fault.objects.get(point="email.send", scope="").delay_ms == (
        faults.DEFAULT_DELAY_MS), "the default, as on the command line"


def joined_long_ago(user: User) -> User:
    """A dual-write user is being pushed to Redis for PUBLISHED_GRACE_SECONDS after it
    committed: only after that is one with no job lost."""
    User.objects.filter(pk=user.pk).update(date_joined=Now() - timedelta(minutes=1))
    return user


def test_lost_emails_count_only_when_nothing_will_send_them(db):
    fresh = User.objects.create_user(username="fresh", signup_mode="dual-write")
    lost = joined_long_ago(User.objects.create_user(username="lost", signup_mode="dual-write"))
    with_job = User.objects.create_user(username="waiting", signup_mode="que")
    from django_q.tasks import async_task

    async_task(users.SEND_EMAIL_TASK, user_id=with_job.pk)
    done = User.objects.create_user(username="done", signup_mode="outbox")
    EmailSend.objects.create(user=done, key="welcome-x", message_id="<x>")
    stats = {s.mode: s for s in signup_stats()}
    assert stats["dual-write"].lost == ["lost"]
    assert stats["dual-write"].in_flight == ["fresh"], "its job may be on its way to Redis"
    assert stats["que"].in_flight == ["waiting"]
    assert stats["que"].lost == []
    assert (stats["outbox"].users, stats["outbox"].emails) == (1, 1)
    assert (stats["dual-write"].users, stats["dual-write"].lost_count) == (2, 1)
    assert fresh.username == "fresh"
    assert lost.username == "lost"


def test_check_consistency_exit_status_and_json(db, capsys):
    joined_long_ago(User.objects.create_user(username="matt", signup_mode="dual-write"))
    call_command("check_consistency", "--json")  # matt is the expected anomaly: exit 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["dual_write_lost_email"] == {
        "name": "dual_write_lost_email", "status": "expected", "count": 1, "ids": ["matt"],
        "description": "dual-write: users whose welcome email was lost (the talk's anomaly)"}

    User.objects.create_user(username="kate", signup_mode="que")  # lost where it must not be
    saga = Saga.objects.create(kind="trip", state=State.COMPENSATED)
    HotelBooking.objects.create(saga_id=saga.pk, step="hotel", status="booked", times_booked=1)
    with pytest.raises(SystemExit) as exit_:
        call_command("check_consistency", "--json")
    assert exit_.value.code == 1
    report = json.loads(capsys.readouterr().out)
    broken = {c["name"]: c["ids"] for c in report["checks"] if c["status"] == "violation"}
    assert broken == {"reliable_signups_lost_email": ["kate"],
                      "saga_compensated_but_booked": [saga.pk]}
    assert [c.name for c in consistency_checks() if c.status == "violation"] == list(broken)


@pytest.mark.cluster
def test_relay_and_recover_buttons_run_on_the_cluster_and_report_the_outcome(
    qcluster, client, settings
):
    # transactional_db (via qcluster): the cluster must see the committed message and saga.
    settings.CLUSTER_WAIT_SECONDS = 30  # a slow machine must not turn this into "queued"
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone
    from django_q.models import Schedule

    from jobs.selectors import queue_drained
    from outbox.services import publish
    from tests.helpers import wait_until

    # The cluster's own fallback relay (a schedule, due when it starts) must not relay the
    # message, or use up the fault, before the button does: put it off, and let a run it has
    # already queued finish (on a loaded machine it can run seconds after the cluster starts).
    Schedule.objects.filter(func="outbox.tasks.relay_outbox").update(
        next_run=timezone.now() + timedelta(days=1))
    wait_until(queue_drained, timeout=30, message="the schedules due at the start to run")

    with transaction.atomic():
        publish(topic="user.welcome_email", payload={"user_id": 1})
    response = client.post(reverse("admin:dashboard_control", args=["relay"]), follow=True)
    assert ("Relayed the outbox: published 1, failed 0 (will retry), dead 0."
            in response.content.decode())
    response = client.post(reverse("admin:dashboard_control", args=["recover"]), follow=True)
    assert "Saga recovery: recovered 0 saga(s)." in response.content.decode()
    from faults import services as faults

    faults.arm(point="relay.publish", action="raise", times=1)
    with transaction.atomic():
        publish(topic="user.welcome_email", payload={"user_id": 2})
    response = client.post(reverse("admin:dashboard_control", args=["relay"]), follow=True)
    page = response.content.decode()
    assert "Relayed the outbox failed on the cluster: injected fault at relay.publish" in page
    assert 'class="error"' in page


def test_buttons_say_so_when_no_cluster_answers(transactional_db, client, settings):
    settings.CLUSTER_WAIT_SECONDS = 1
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    response = client.post(reverse("admin:dashboard_control", args=["relay"]), follow=True)
    assert "no cluster answered in time" in response.content.decode()
    (queued,) = queued_tasks()  # it runs when a cluster starts
    assert queued.func == "outbox.tasks.relay_outbox"


def test_a_saga_page_with_a_bad_id_is_the_admins_not_found_redirect(admin_client):
    for bad in ("abc", "999999"):
        response = admin_client.get(f"/admin/sagas/saga/{bad}/change/")
        assert response.status_code == 302
        assert response.url == "/admin/"


def test_out_of_range_fault_values_are_a_message(admin_client):
    response = admin_client.post(reverse("admin:dashboard_control", args=["fault"]),
                              {"point": "email.send", "action": "delay", "ms": "-1"},
                              follow=True)
    assert "Not done: ms:" in response.content.decode()
    assert not Fault.objects.exclude(action="").exists()


def test_check_consistency_reports_a_flight_booked_twice(db, capsys):
    from django.core.management import call_command

    from sagas.models import Saga
    from travel.models import FlightBooking

    saga = Saga.objects.create(kind="trip", payload={"customer": "x"})
    FlightBooking.objects.create(saga_id=saga.pk, step="flight", status="booked",
                                 times_booked=2)
    with pytest.raises(SystemExit) as exit_:
        call_command("check_consistency")
    assert exit_.value.code == 1
    assert "flight is booked at most once" in capsys.readouterr().out
