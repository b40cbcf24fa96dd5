import os
import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from common import sideconn
from devtools import local_postgres
from faults import services
from faults.models import Fault
from faults.services import InjectedFault, fire, scoped


def fired(point: str, scope: str = "") -> int:
    return Fault.objects.get(point=point, scope=scope).fired


def test_an_armed_point_raises_the_given_number_of_times_then_disarms(db):
    services.arm(point="email.send", action="raise", times=2)
    for _ in range(2):
        with pytest.raises(InjectedFault, match="email.send"):
            fire("email.send")
    fire("email.send")  # spent: passes quietly
    assert fired("email.send") == 2


def test_always_keeps_firing(db):
    services.arm(point="email.send", action="raise", times=None)
    for _ in range(5):
        with pytest.raises(InjectedFault):
            fire("email.send")
    assert services.disarm(point="email.send") is True
    fire("email.send")


def test_a_fault_fired_in_a_rolled_back_transaction_stays_fired(db):
    services.arm(point="signup.part1", action="raise", times=1)
    with pytest.raises(InjectedFault), transaction.atomic():
        fire("signup.part1")
    # the retry runs clean: the firing was counted outside the rolled-back transaction
    fire("signup.part1")
    assert fired("signup.part1") == 1


def test_a_scoped_fault_fires_only_inside_its_scope(db):
    services.arm(point="signup.part2", action="raise", times=1, scope="job-a")
    with scoped("job-b"):
        fire("signup.part2")
    fire("signup.part2")
    with scoped("job-a"), pytest.raises(InjectedFault):
        fire("signup.part2")
    with scoped("job-a"):
        fire("signup.part2")  # once only


def test_delay_sleeps(db, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(services.time, "sleep", slept.append)
    services.arm(point="email.send", action="delay", times=1, delay_ms=250)
    fire("email.send")
    assert slept == [0.25]


def test_crash_exits_the_process(db, monkeypatch):
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(services.os, "_exit", fake_exit)
    services.arm(point="email.send", action="crash", times=1)
    with pytest.raises(SystemExit):
        fire("email.send")
    assert exits == [services.CRASH_EXIT_CODE]


def test_faults_do_nothing_when_disabled(db, settings):
    services.arm(point="email.send", action="raise", times=1)
    settings.FAULTS_ENABLED = False
    sideconn.close()
    fire("email.send")
    assert not sideconn.is_open(), "a disabled fault point must not even connect"
    with pytest.raises(services.FaultError, match="FAULTS_ENABLED"):
        services.arm(point="email.send", action="raise")
    settings.FAULTS_ENABLED = True
    with pytest.raises(InjectedFault):  # the disabled pass did not use up the firing
        fire("email.send")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"point": "no.such.point", "action": "raise"}, "unknown fault point 'no.such.point'"),
        ({"point": "email.send", "action": "explode"}, "unknown action 'explode'"),
        ({"point": "email.send", "action": "raise", "times": 0},
         "times must be a whole number from 1 to 1,000,000, not 0"),
        ({"point": "email.send", "action": "raise", "times": 3_000_000_000},
         "times must be a whole number from 1 to 1,000,000"),
        ({"point": "email.send", "action": "delay", "delay_ms": -1},
         "the delay in ms must be a whole number from 0 to 600,000, not -1"),
        ({"point": "email.send", "action": "raise", "times": True}, "not True"),
    ],
)
def test_bad_arming_requests_are_refused_and_write_nothing(db, kwargs, message):
    with pytest.raises(services.FaultError, match=message):
        services.arm(**kwargs)
    assert not Fault.objects.exclude(action="").exists()


def test_firing_an_undeclared_point_is_a_programming_error(db):
    with pytest.raises(services.FaultError, match="unknown fault point"):
        fire("typo.point")


def test_faults_command_arms_lists_and_disarms(db, capsys):
    call_command("faults", "arm", "signup.part2", "--action", "crash", "--times", "1")
    call_command("faults", "list")
    out = capsys.readouterr().out
    assert "armed signup.part2: crash, 1 time(s)" in out
    assert "ARMED crash" in out
    call_command("faults", "disarm-all")
    call_command("faults", "list")
    assert "ARMED" not in capsys.readouterr().out.split("disarmed")[-1]
    with pytest.raises(CommandError, match="unknown fault point"):
        call_command("faults", "arm", "nope", "--action", "raise")


def test_arming_a_delay_without_ms_says_the_duration_it_uses(db, capsys):
    """Found in issue 12: `faults arm ... --action delay` without --ms said nothing of how
    long the delay is."""
    call_command("faults", "arm", "email.send", "--action", "delay")
    assert ("armed email.send: delay 1000 ms (the default; --ms N to change it), always"
            in capsys.readouterr().out)
    assert Fault.objects.get(point="email.send", scope="").delay_ms == 1000
    call_command("faults", "arm", "email.send", "--action", "delay", "--ms", "0", "--times", "2")
    assert "armed email.send: delay 0 ms, 2 time(s)" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--action", "raise", "--ms", "5"], "--ms is the length of a delay"),
    (["--action", "delay", "--ms", "-1"],
     "argument --ms: the delay in ms must be a whole number from 0 to 600,000, not '-1'"),
    (["--action", "delay", "--ms", "1.5"], "argument --ms: the delay in ms must be a whole"),
    (["--action", "raise", "--times", "0"], "argument --times: times must be a whole number"),
    (["--action", "raise", "--times", "nan"], "argument --times: times must be a whole number"),
    (["--action", "boom"], "argument --action: invalid choice: 'boom'"),
])
def test_the_faults_command_refuses_bad_numbers_in_one_line(db, args, message):
    with pytest.raises(CommandError, match=re.escape(message)) as refused:
        call_command("faults", "arm", "email.send", *args)
    assert "\n" not in str(refused.value)
    assert not Fault.objects.exclude(action="").exists()


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")),
                    reason="restarts the project-local PostgreSQL only")
def test_the_first_fault_bookkeeping_after_a_postgresql_restart_works(transactional_db):
    """Found reading the code: the side connection was replaced only after it had failed once,
    so after a restart the first fault point (or saga lock) of every process failed; in an
    email job, after the mail had gone out."""
    services.arm(point="email.send", action="raise", times=2)
    with pytest.raises(InjectedFault):
        fire("email.send")  # the side connection is open and idle now
    connection.close()
    local_postgres.restart(mode="immediate")
    with pytest.raises(InjectedFault):
        fire("email.send")
    assert fired("email.send") == 2
