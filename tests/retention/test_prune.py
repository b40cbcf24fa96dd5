"""Retention: what grows with traffic is deleted after its window, in small batches, and
never what a guarantee still needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.db.models.functions import Now
from django.urls import reverse

from dashboard import audit, tallies
from outbox.models import PUBLISHED_TALLY, OutboxMessage
from outbox.services import publish
from retention import services as retention
from retention.models import Pruned
from retention.selectors import sizes
from sagas.models import Saga, SagaLog, State
from travel.models import CarBooking, FlightBooking, HotelBooking
from users import services as users
from users.models import EmailSend, Mode, User
from users.selectors import AUDIT as USERS


def ago(days: float):
    return Now() - timedelta(days=days)


def messages(n: int, *, published_days_ago: float | None) -> list[OutboxMessage]:
    made = [publish(topic="user.welcome_email", payload={"user_id": i}) for i in range(n)]
    if published_days_ago is not None:
        OutboxMessage.objects.filter(pk__in=[m.pk for m in made]).update(
            published_at=ago(published_days_ago))
    return made


def test_published_messages_go_after_their_window_in_batches_and_nothing_else(db, settings):
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "outbox_published": 7}
    old = messages(5, published_days_ago=8)
    recent = messages(2, published_days_ago=1)
    pending = messages(1, published_days_ago=None)
    dead = messages(1, published_days_ago=None)
    OutboxMessage.objects.filter(pk=dead[0].pk).update(dead_at=ago(30))
    published = tallies.totals(PUBLISHED_TALLY)[PUBLISHED_TALLY]

    (outcome,) = retention.prune(only=["outbox_published"], batch=2)
    assert outcome.deleted == 5 and outcome.complete  # noqa: PT018
    left = set(OutboxMessage.objects.values_list("pk", flat=True))
    assert left == {m.pk for m in recent + pending + dead}
    assert not left & {m.pk for m in old}
    assert tallies.totals(PUBLISHED_TALLY)[PUBLISHED_TALLY] == published == 7, (
        "published ever: pruning does not uncount")
    assert Pruned.objects.get(rule="outbox_published").deleted == 5


def test_a_budget_stops_the_pass_and_the_next_one_goes_on(db, settings):
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "outbox_published": 7}
    from retention import registry

    messages(6, published_days_ago=8)
    rule = registry.rule("outbox_published")
    assert rule is not None
    first = retention.prune_rule(rule, batch=2, budget=1e-9)  # one batch, then the budget
    assert (first.deleted, first.complete) == (2, False)
    assert not Pruned.objects.get(rule="outbox_published").complete
    (spent,) = retention.prune(only=["outbox_published"], batch=2, budget=-1)
    assert (spent.deleted, spent.complete) == (0, False), "a pass with nothing left waits"
    (second,) = retention.prune(only=["outbox_published"], batch=2)
    assert (second.deleted, second.complete) == (4, True)


def sent(name: str, mode: str = Mode.QUE, *, days: float) -> User:
    user = User.objects.create_user(username=name, signup_mode=mode)
    User.objects.filter(pk=user.pk).update(date_joined=ago(days + 0.01))
    users.send_welcome_email(user_id=user.pk)
    EmailSend.objects.filter(user=user).update(sent_at=ago(days))
    return user


def test_the_email_ledger_keeps_a_key_while_a_duplicate_can_still_arrive(db, settings):
    from django_q.tasks import async_task

    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "email_ledger": 30}
    gone = sent("gone", days=40)
    queued = sent("queued", days=40)
    async_task(users.SEND_EMAIL_TASK, user_id=queued.pk)  # a copy of its job still queued
    waiting = sent("waiting", Mode.OUTBOX, days=40)
    publish(topic=users.WELCOME_TOPIC, payload={"user_id": waiting.pk})  # its message pending
    recent = sent("recent", days=1)
    unaudited = sent("unaudited", days=40)  # joined after the audit's last pass
    audit.advance(USERS, settled=lambda after, limit: ({}, recent.pk) if after < recent.pk
                  else ({}, after))

    (outcome,) = retention.prune(only=["email_ledger"])
    assert outcome.deleted == 1
    assert set(EmailSend.objects.values_list("user__username", flat=True)) == {
        "queued", "waiting", "recent", "unaudited"}
    assert gone.pk < unaudited.pk

    # the counts stay: every email ever sent
    stats = {s["mode"]: s for s in json.loads(_show_state())["modes"]}
    assert stats["que"]["emails"] == 4


def _show_state() -> str:
    from io import StringIO

    out = StringIO()
    call_command("show_state", "--json", stdout=out)
    return out.getvalue()


def saga(state: str, *, days: float) -> Saga:
    s = Saga.objects.create(kind="trip", state=state)
    SagaLog.objects.create(saga=s, seq=1, event="SAGA_START", pid=1)
    for model in (HotelBooking, CarBooking, FlightBooking):
        model.objects.create(saga_id=s.pk, step="x", status="booked", times_booked=1)
    Saga.objects.filter(pk=s.pk).update(updated_at=ago(days), created_at=ago(days))
    return s


def test_finished_sagas_go_with_their_logs_and_bookings(db, settings):
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "sagas_finished": 30}
    old = saga(State.COMPLETED, days=40)
    stuck = saga(State.STUCK, days=40)
    recent = saga(State.COMPLETED, days=1)
    from sagas import services as sagas

    sagas.audit_sagas()
    (outcome,) = retention.prune(only=["sagas_finished"])
    assert outcome.deleted == 1
    assert set(Saga.objects.values_list("pk", flat=True)) == {stuck.pk, recent.pk}
    for model in (SagaLog, HotelBooking, CarBooking, FlightBooking):
        assert not model.objects.filter(saga_id=old.pk).exists(), model


def test_mail_files_go_after_their_window(db, settings, tmp_path):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path)
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "mail_files": 7}
    old, new = tmp_path / "1-old.log", tmp_path / "2-new.log"
    for path in (old, new):
        path.write_text("mail")
    eight_days = time.time() - 8 * 86_400
    os.utime(old, (eight_days, eight_days))
    (outcome,) = retention.prune(only=["mail_files"])
    assert outcome.deleted == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2-new.log"]


def test_a_ledger_window_below_the_redelivery_horizon_is_refused(db, settings):
    env = {**os.environ, "RETAIN_EMAIL_LEDGER_DAYS": "1"}
    done = subprocess.run([sys.executable, "manage.py", "check"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "RETAIN_EMAIL_LEDGER_DAYS must be a whole number from 2 to 3,650, not '1': a duplicate "
        "of a job can still arrive 2 days after it ran (the redelivery horizon, "
        "docs/retention.md)")
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "job_runs": 1}
    assert [e.id for e in run_checks()] == ["reliable.E010"]


def test_the_history_panel_shows_each_table_its_oldest_row_and_last_prune(db, settings,
                                                                          admin_client):
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "outbox_published": 7}
    messages(3, published_days_ago=8)
    call_command("prune", "--only", "outbox_published")
    messages(1, published_days_ago=2)
    found = {s.rule: s for s in sizes()}
    assert found["outbox_published"].oldest is not None
    pruned = found["outbox_published"].pruned
    assert pruned is not None
    assert pruned.deleted == 3
    page = admin_client.get(reverse("admin:dashboard_panels")).content.decode()
    assert 'id="panel-history"' in page
    assert "3 rows in" in page


def test_prune_refuses_bad_input_in_one_line(db, capsys):
    from django.core.management.base import CommandError

    for args, said in [(["--only", "users"], "unknown rule 'users'"),
                       (["--batch", "0"], "the batch must be a whole number from 1"),
                       (["--budget", "-1"], "the budget must be a number of seconds")]:
        with pytest.raises(CommandError, match=said):
            call_command("prune", *args)
