"""`create_user --sync` reports what truly happened to the welcome email, in every mode.

Found in issue 18: with no fault and Redis up, dual-write and outbox printed "nothing will
ever send this user's welcome email: it is lost" 5 times out of 5, and every email arrived
within 3 s: a job a worker had taken, or a message just published, was counted as nothing.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from faults import stores
from users.models import EmailSend, Mode, User

LOST = "nothing will ever send this user's welcome email: it is lost"


def sync(name: str, *args: str) -> None:
    call_command("create_user", name, "--sync", *args)


@pytest.mark.cluster
@pytest.mark.any_broker  # the report is the claim, whatever carries the jobs
@pytest.mark.beside_lab  # it waits on three processes: make test runs it in its second pass
@pytest.mark.parametrize("mode", Mode.values)
def test_with_the_workers_running_the_email_is_reported_sent(
    mode, qcluster, redis_cluster, start_process, capsys
):
    start_process("relay_outbox", "--follow", name="relay", ready="relaying outbox messages")
    sync("mike", "--mode", mode, "--wait", "30")
    out = capsys.readouterr().out
    assert f"user mike ({mode}) committed" in out
    assert "welcome email sent (<welcome-" in out, out
    assert LOST not in out
    assert EmailSend.objects.filter(user__username="mike").count() == 1


WHERE = {Mode.DUAL_WRITE: "queued in Redis", Mode.OUTBOX: "waiting in the outbox",
         Mode.QUE: "queued in PostgreSQL"}


@pytest.mark.parametrize("mode", Mode.values)
def test_with_no_worker_running_the_email_is_reported_on_its_way_and_where(
    mode, transactional_db, capsys
):
    sync("mike", "--mode", mode, "--wait", "0.5")
    out = capsys.readouterr().out
    assert f"welcome email on its way, not sent yet: {WHERE[mode]}" in out, out
    assert LOST not in out


@pytest.mark.parametrize("mode", Mode.values)
def test_a_failure_in_part1_rolls_the_user_back(mode, transactional_db, capsys):
    with pytest.raises(CommandError, match="injected fault at signup.part1"):
        sync("kevin", "--mode", mode, "--fail", "part1")
    assert "user kevin: not created (the transaction rolled back)" in capsys.readouterr().out
    assert not User.objects.filter(username="kevin").exists()


@pytest.mark.parametrize(("mode", "said"), [
    (Mode.DUAL_WRITE, LOST),  # committed, never enqueued: the talk's anomaly
    (Mode.OUTBOX, "on its way, not sent yet: waiting in the outbox"),
    (Mode.QUE, "on its way, not sent yet: queued in PostgreSQL"),
])
def test_a_failure_in_part2_loses_only_the_dual_write_email(mode, said, transactional_db,
                                                            capsys):
    with pytest.raises(CommandError, match="injected fault at signup.part2"):
        sync("matt", "--mode", mode, "--fail", "part2")
    out = capsys.readouterr().out
    assert said in out, out
    assert (LOST in out) == (mode == Mode.DUAL_WRITE)


@pytest.mark.parametrize(("mode", "said"), [
    (Mode.DUAL_WRITE, LOST),
    (Mode.OUTBOX, "on its way, not sent yet: waiting in the outbox"),
    (Mode.QUE, "on its way, not sent yet: queued in PostgreSQL"),
])
def test_with_redis_down_only_dual_write_loses_the_email(mode, said, transactional_db, capsys):
    stores.act(action=stores.Action.STOP)
    try:
        if mode == Mode.DUAL_WRITE:
            with pytest.raises(CommandError, match="Redis refused the welcome email job"):
                sync("kevin", "--mode", mode)
        else:
            sync("kevin", "--mode", mode, "--wait", "0.5")
    finally:
        stores.act(action=stores.Action.START)
    out = capsys.readouterr().out
    assert said in out, out
