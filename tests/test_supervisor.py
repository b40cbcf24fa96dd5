"""`make run` under supervisor (devtools/supervise.py): what dies comes back by itself, and a
stop keeps django-q2's rules and leaves no process of any program's group behind."""

import configparser
import os
import signal
import sys

import pytest

from devtools import supervise
from devtools.processes import alive, children, group_members
from tests.helpers import subprocess_env, wait_until


def test_the_configuration_keeps_django_q2s_stop_rules(tmp_path):
    conf = configparser.RawConfigParser()
    conf.read_string(supervise.config(list(supervise.PROGRAMS), var=tmp_path,
                                      python=sys.executable, run_addr="127.0.0.1:8100"))
    for name in supervise.PROGRAMS:
        program = conf[f"program:{name}"]
        # SIGTERM to the main pid only, then after the grace period SIGKILL to the whole group
        assert program["stopsignal"] == "TERM"
        assert program["stopasgroup"] == "false"
        assert program["killasgroup"] == "true"
        assert program["stopwaitsecs"] == ("45" if name.startswith("qcluster") else "10")
        assert program["autorestart"] == "true"
        assert program["stdout_logfile"] == str(tmp_path / "log" / f"{name}.log")
    assert conf["program:web"]["command"].endswith("runserver 127.0.0.1:8100 --noreload")
    assert 'Q_CLUSTER_NAME="redis"' in conf["program:qcluster-redis"]["environment"]
    assert "inet_http_server" not in conf  # a unix socket only, no TCP
    assert conf["unix_http_server"]["file"] == str(tmp_path / "run" / "supervisor.sock")


@pytest.mark.beside_conformance  # mostly waits: make test's second pass
@pytest.mark.cluster
@pytest.mark.any_broker
def test_a_sigkilled_relay_and_recoverer_come_back_and_stop_leaves_no_process(
    transactional_db, tmp_path
):
    names = ["qcluster", "relay", "recoverer"]
    log = tmp_path / "log" / "supervisord.log"
    try:
        assert supervise.start(names, var=tmp_path, python=sys.executable,
                               env=subprocess_env()) == 0
        supervisord = supervise.supervisord_pid(tmp_path)
        assert supervisord is not None
        first = {name: info["pid"] for name, info in supervise.programs(tmp_path).items()}
        for name in ("relay", "recoverer"):
            os.kill(first[name], signal.SIGKILL)

        def back() -> dict[str, int]:
            infos = supervise.programs(tmp_path)
            again = {n: infos[n]["pid"] for n in ("relay", "recoverer")
                     if infos[n]["statename"] == "RUNNING" and infos[n]["pid"] != first[n]}
            return again if len(again) == 2 else {}

        again = wait_until(back, timeout=15, message=lambda: "the relay and the recoverer to be "
                           f"running again:\n{log.read_text()[-2000:]}")
        cluster = first["qcluster"]
        dispatcher = children(cluster)
        workers = [pid for d in dispatcher for pid in children(d)]
        assert dispatcher
        assert workers
    finally:
        supervise.stop(var=tmp_path, python=sys.executable)
    assert not alive(supervisord)
    for pgid in [*first.values(), *again.values()]:
        assert group_members(pgid) == [], f"process group {pgid} outlived the stop"
    assert not [pid for pid in dispatcher + workers if alive(pid)]
    said = log.read_text()
    assert "stopped: qcluster (exit status 0)" in said, said  # SIGTERM sufficed, no SIGKILL
    assert "exited: relay (terminated by SIGKILL; not expected)" in said, said
