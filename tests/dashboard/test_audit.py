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
        matt.pk: "lost", kate.pk: "lost"}
    assert set(live_users().values_list("username", flat=True)) == {"matt", "kate", "young"}
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
