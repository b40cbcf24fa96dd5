"""django-q2's commands and its clusters' Stat, on each broker: `qcluster --run-once`,
`qinfo`, `qmonitor --run-once`, `qmemory --run-once`, `Stat.get_all()`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.management import call_command
from django_q.conf import Conf
from django_q.monitor_terminal import BLESSED_INSTALL_MESSAGE
from django_q.status import Stat

from tests.conformance.conftest import Q_BROKER, SETTINGS, STOCK_QCLUSTER
from tests.helpers import BASE_DIR, subprocess_env

# conformance: its own run in make test's second pass (it mostly waits on its clusters)
pytestmark = [pytest.mark.cluster, pytest.mark.any_broker, pytest.mark.conformance]

try:
    import blessed
except ImportError:
    blessed = None


def test_qcluster_run_once(broker):
    """`qcluster --run-once` starts the cluster and stops it: exit 0, in seconds."""
    if broker == "orm":  # django-q2's own command (pgbroker's shadows the name)
        argv = ["shell", "-c", STOCK_QCLUSTER.replace("Command())", "Command(), '--run-once')")]
    else:
        argv = ["qcluster", "--run-once"]
    env = subprocess_env(DJANGO_SETTINGS_MODULE=SETTINGS, Q_BROKER=Q_BROKER[broker],
                         Q_CLUSTER_NAME="conformance-run-once")
    done = subprocess.run([sys.executable, "manage.py", *argv], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "running." in done.stdout + done.stderr


def test_stat_shows_the_cluster(clusters, capsys):
    main = clusters.main

    def main_stat():  # saved every 0.5 s by the stock sentinel, for 3 s; the key list they
        # share in the cache is read-modify-written by each cluster: a key may miss a turn
        return next((s for s in Stat.get_all() if s.pid == main.process.pid), None)

    stat = main.settle(main_stat, "the main cluster's Stat", timeout=2)
    assert stat.status in (Conf.IDLE, Conf.WORKING)
    assert len(stat.workers) == 2
    call_command("qinfo", "--ids")
    assert str(stat.cluster_id) in capsys.readouterr().out


def test_monitoring_commands_run(clusters, capsys):
    """qinfo, qmonitor --run-once and qmemory --run-once. Without `blessed` (not in
    requirements.txt) each says to install it and stops, on either broker."""
    call_command("qinfo", "--config")
    assert f"CLUSTER_NAME: {Conf.CLUSTER_NAME}" in capsys.readouterr().out
    for args in (["qinfo"], ["qmonitor", "--run-once"], ["qmemory", "--run-once"]):
        call_command(*args)
    out = capsys.readouterr().out
    if blessed is None:
        assert out.count(BLESSED_INSTALL_MESSAGE) == 3
