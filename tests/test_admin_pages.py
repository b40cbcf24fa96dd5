"""Admin pages and actions that are not on the dashboard: they call the same services."""

from django.urls import reverse
from django.utils import timezone

from jobs.selectors import queued_tasks
from outbox.models import OutboxMessage
from sagas.models import Saga, State
from users.models import User


def test_outbox_admin_filters_by_state_and_retries_dead_messages(admin_client):
    dead = OutboxMessage.objects.create(topic="user.welcome_email", payload={"user_id": 1},
                                        attempts=5, dead_at=timezone.now(), last_error="boom")
    OutboxMessage.objects.create(topic="user.welcome_email", payload={"user_id": 2})
    url = reverse("admin:outbox_outboxmessage_changelist")
    assert str(dead.id) in admin_client.get(url + "?state=dead").content.decode()
    assert str(dead.id) not in admin_client.get(url + "?state=pending").content.decode()
    admin_client.post(url, {"action": "retry_dead", "_selected_action": [dead.pk]})
    dead.refresh_from_db()
    assert (dead.state, dead.attempts) == ("pending", 0)


def test_starting_a_trip_from_the_saga_admin(admin_client):
    url = reverse("admin:sagas_saga_start")
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"customer": "alice", "fail": "car", "crash": ""})
    saga = Saga.objects.get()
    assert response.url == reverse("admin:sagas_saga_change", args=[saga.pk])
    assert saga.fault_scope
    page = admin_client.get(response.url).content.decode()
    assert "Saga START" in page
    assert "saga.car.book raise" in page


def test_the_saga_admin_start_page_is_for_operators_only(db, client):
    client.force_login(User.objects.create_user(username="s", password="pw", is_staff=True))
    assert client.get(reverse("admin:sagas_saga_start")).status_code == 403
    assert client.post(reverse("admin:sagas_saga_recover")).status_code == 403


def test_the_saga_list_filters_by_state(admin_client):
    Saga.objects.create(kind="trip", state=State.STUCK, payload={"customer": "zed"})
    Saga.objects.create(kind="trip", state=State.COMPLETED, payload={"customer": "amy"})
    page = admin_client.get(reverse("admin:sagas_saga_changelist") + "?state__exact=stuck")
    assert "zed" in page.content.decode()
    assert "amy" not in page.content.decode()


def test_retrying_a_stuck_saga_from_the_admin_enqueues_its_coordinator(admin_client):
    from django_q.brokers import get_broker

    from sagas import services

    saga = services.start_trip(customer="eve")
    get_broker().purge_queue()
    Saga.objects.filter(pk=saga.pk).update(state=State.STUCK)
    admin_client.post(reverse("admin:sagas_saga_changelist"),
              {"action": "retry_stuck", "_selected_action": [saga.pk]})
    saga.refresh_from_db()
    assert saga.state == State.COMPENSATING
    assert saga.retry_from_seq == 1
    (task,) = queued_tasks()
    assert task.kwargs == {"saga_id": saga.pk}


def test_staff_who_may_only_look_cannot_run_retry_or_recover_actions(db, client):
    from django.contrib.auth.models import Permission

    staff = User.objects.create_user(username="s", password="pw", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_outboxmessage", "view_saga"]))
    client.force_login(staff)
    dead = OutboxMessage.objects.create(topic="user.welcome_email", payload={"user_id": 1},
                                        attempts=5, dead_at=timezone.now())
    url = reverse("admin:outbox_outboxmessage_changelist")
    assert "Retry selected dead messages" not in client.get(url).content.decode()
    client.post(url, {"action": "retry_dead", "_selected_action": [dead.pk]})
    dead.refresh_from_db()
    assert dead.state == "dead"
    page = client.get(reverse("admin:sagas_saga_changelist")).content.decode()
    assert "Recover sagas now" not in page
