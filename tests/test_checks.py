"""The configuration doctor: `manage.py check` names each queue setting that breaks
transactional enqueue or delivery, with a hint."""

import os
import subprocess
import sys

import pytest

from jobs.checks import check_job_settings
from pgbroker.checks import check_queue_settings
from tests.helpers import BASE_DIR

STOCK = {"orm": "default", "workers": 2, "timeout": 30, "queue_limit": 2, "bulk": 1}


def ids(found) -> list[str]:
    return [f.id for f in found]


def test_the_project_settings_pass_every_check():
    assert check_queue_settings() == []
    assert check_job_settings() == []


def test_an_orm_alias_other_than_the_business_one_is_flagged(settings, monkeypatch):
    settings.Q_CLUSTER = {**STOCK, "orm": "queue", "broker_class": "x", "retry": 999}
    monkeypatch.setitem(settings.DATABASES, "queue", settings.DATABASES["default"])
    (found,) = check_queue_settings()
    assert found.id == "reliable.W001"
    assert "orphan task" in found.msg
    assert found.hint is not None
    assert "Q_CLUSTER['orm'] = 'default'" in found.hint


@pytest.mark.parametrize(("retry", "flagged"), [(120, False), (119, True), (30, True)])
def test_a_lease_shorter_than_timeout_plus_prefetch_is_flagged_for_the_orm_broker(
    settings, retry, flagged
):
    settings.Q_CLUSTER = {**STOCK, "retry": retry}  # needs (ceil(3/2)+1)*30 + 30 = 120 s
    assert ids(check_queue_settings()) == (["reliable.W002"] if flagged else [])


def test_the_lease_is_not_checked_for_the_postgresql_broker(settings):
    settings.Q_CLUSTER = {**STOCK, "retry": 1, "broker_class": "pgbroker.broker.PostgresBroker"}
    assert check_queue_settings() == []


def test_conn_max_age_zero_is_flagged(settings, monkeypatch):
    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", 0)
    assert ids(check_queue_settings()) == ["reliable.W004"]


def test_q_max_attempts_below_job_max_attempts_is_flagged(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "max_attempts": 2}
    settings.JOB_MAX_ATTEMPTS = 5
    assert ids(check_job_settings()) == ["reliable.W003"]
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "max_attempts": 0}  # 0: never gives up
    assert check_job_settings() == []


def test_an_unknown_q_broker_stops_manage_py_with_a_clear_error():
    env = dict(os.environ, Q_BROKER="carrier-pigeon")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "(reliable.E001) Q_BROKER='carrier-pigeon' is not a broker" in result.stderr
