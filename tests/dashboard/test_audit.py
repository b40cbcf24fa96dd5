"""The audit: checks judge what is recent plus what the audit found behind its watermark, so
a look costs what the last minutes cost; `check_consistency --full` judges everything."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db.models.functions import Now

from dashboard import audit
from dashboard.models import Finding
from dashboard.selectors import consistency_checks
from sagas import services as sagas
from sagas.models import Saga, State
from sagas.selectors import AUDIT as SAGAS
from users import services
from users.models import EmailSend, Mode, User
from users.selectors import AUDIT as USERS
from users.selectors import live_users


def checks() -> dict[str, list]:
    return {c.name: c.ids for c in consistency_checks() if c.count}


def user(name: str, mode: str, *, sent: bool, minutes_ago: float = 10) -> User:
    u = User.objects.create_user(username=name, signup_mode=mode)
    User.objects.filter(pk=u.pk).update(date_joined=Now() - timedelta(minutes=minutes_ago))
    if sent:
        services.send_welcome_email(user_id=u.pk)
    return u


@pytest.fixture
def settle(settings):
    settings.AUDIT_SETTLE_SECONDS = 60
    return settings


def test_the_audit_passes_settled_users_and_keeps_what_was_not_sent(db, settle):
    ok = [user(f"ok{i}", Mode.QUE, sent=True) for i in range(5)]
    matt = user("matt", Mode.DUAL_WRITE, sent=False)
    kate = user("kate", Mode.QUE, sent=False)
    young = user("young", Mode.QUE, sent=True, minutes_ago=0)
    assert checks() == {"dual_write_lost_email": ["matt"], "reliable_signups_lost_email": ["kate"]}

    services.audit_welcome_emails()
    assert audit.position(USERS) == kate.pk, "up to the last settled user, not the young one"
    assert dict(Finding.objects.values_list("subject", "verdict")) == {
        matt.pk: "lost (dual-write)", kate.pk: "lost"}
    # matt's loss is final (nothing sends a dual-write email again): counted, not judged again
    assert set(live_users().values_list("username", flat=True)) == {"kate", "young"}
    assert checks() == {"dual_write_lost_email": ["matt"], "reliable_signups_lost_email": ["kate"]}

    services.send_welcome_email(user_id=kate.pk)  # reconciled after all
    assert checks() == {"dual_write_lost_email": ["matt"]}, "a finding is judged again"
    services.audit_welcome_emails()
    assert list(Finding.objects.values_list("subject", flat=True)) == [matt.pk]

    # Behind the watermark an ok user is not judged again: that is what keeps a look cheap.
    EmailSend.objects.filter(user=ok[0]).delete()
    assert checks() == {"dual_write_lost_email": ["matt"]}
    with pytest.raises(SystemExit):
        call_command("check_consistency", "--full", "--json")
    assert young.pk > kate.pk


def test_check_consistency_full_judges_every_row(db, settle, capsys):
    user("ok", Mode.QUE, sent=True)
    services.audit_welcome_emails()
    call_command("check_consistency", "--json")
    assert json.loads(capsys.readouterr().out)["ok"] is True
    EmailSend.objects.all().delete()  # what only a full sweep can see
    call_command("check_consistency", "--json")
    assert json.loads(capsys.readouterr().out)["ok"] is True
    with pytest.raises(SystemExit) as exit_:
        call_command("check_consistency", "--full", "--json")
    assert exit_.value.code == 1
    broken = {c["name"]: c["ids"] for c in json.loads(capsys.readouterr().out)["checks"]
              if c["status"] == "violation"}
    assert broken == {"reliable_signups_lost_email": ["ok"]}


def test_the_saga_audit_keeps_unfinished_and_broken_sagas(db, settle):
    old = Now() - timedelta(minutes=10)
    done = Saga.objects.create(kind="trip", state=State.COMPENSATED)
    running = Saga.objects.create(kind="trip", state=State.RUNNING)
    broken = Saga.objects.create(kind="trip", state=State.COMPLETED)  # nothing booked
    Saga.objects.update(created_at=old)
    sagas.audit_sagas()
    assert audit.position(SAGAS) == broken.pk
    assert dict(Finding.objects.filter(audit=SAGAS).values_list("subject", "verdict")) == {
        running.pk: "unfinished", broken.pk: "completed, not booked"}
    assert checks() == {"saga_completed_but_not_booked": [broken.pk]}
    Saga.objects.filter(pk=running.pk).update(state=State.COMPENSATED)
    sagas.audit_sagas()
    assert set(Finding.objects.filter(audit=SAGAS).values_list("subject", flat=True)) == {
        broken.pk}
    assert done.pk < running.pk


def test_a_dead_outbox_message_is_a_lost_email(db, settle):
    """The relay gave up on it (a person retries it): lost, a violation, not a crash."""
    from outbox.models import OutboxMessage
    from outbox.services import publish

    otto = user("otto", Mode.OUTBOX, sent=False)
    message = publish(topic=services.WELCOME_TOPIC, payload={"user_id": otto.pk})
    OutboxMessage.objects.filter(pk=message.pk).update(dead_at=Now())
    assert checks() == {"reliable_signups_lost_email": ["otto"], "outbox_dead": [str(message.pk)]}
    services.audit_welcome_emails()
    assert list(Finding.objects.values_list("verdict", flat=True)) == ["lost"]


def test_a_full_sweep_after_the_ledger_was_pruned_raises_no_false_alarm(db, settings, capsys):
    from retention import services as retention

    settings.AUDIT_SETTLE_SECONDS = 60
    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "email_ledger": 30}
    old = user("old", Mode.QUE, sent=True, minutes_ago=40 * 24 * 60)
    EmailSend.objects.filter(user=old).update(sent_at=Now() - timedelta(days=40))
    services.audit_welcome_emails()
    (outcome,) = retention.prune(only=["email_ledger"])
    assert outcome.deleted == 1
    call_command("check_consistency", "--full", "--json")  # exit 0: the audit saw it sent
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert checks() == {}


def test_final_findings_are_counted_not_judged_again(db, settle):
    from users.selectors import live_users, signup_stats

    for i in range(3):
        user(f"dw{i}", Mode.DUAL_WRITE, sent=False)
    services.audit_welcome_emails()
    assert not live_users().exists(), "nothing left to judge at every look"
    (dual,) = [s for s in signup_stats() if s.mode == Mode.DUAL_WRITE]
    assert (dual.users, dual.lost_count, dual.lost) == (3, 3, ["dw0", "dw1", "dw2"])
