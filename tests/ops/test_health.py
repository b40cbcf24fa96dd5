"""Health probes on real processes: each long-running program says it is live and ready in
its status file, turns not ready (with the reason) while PostgreSQL or Redis is away and ready
again when it returns; a stopped or killed process is not live; the web answers /healthz/*
before any host or HTTPS rule.

PostgreSQL is stopped for real: the processes here work on a PostgreSQL of the test's own
(var/ops-test-pg, devtools/local_postgres.py), never on the test database's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.test import override_settings

from devtools import local_postgres, local_redis
from devtools.supervise import PROGRAMS
from ops import programs
from pgbroker.status import verdict
from tests.helpers import BASE_DIR, free_port, subprocess_env, wait_until

OWN_PG = "var/ops-test-pg"


@pytest.fixture(scope="module")
def stoppable_pg():
    """A migrated PostgreSQL of this module's own, which its tests stop and start."""
    if not local_postgres.available():
        pytest.skip("PostgreSQL's server programs are not installed")
    local_postgres.start(OWN_PG)
    url = local_postgres.cluster(OWN_PG).url
    migrated = subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR,
                              env=subprocess_env(DATABASE_URL=url), capture_output=True,
                              text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stderr
    yield url
    local_postgres.stop(OWN_PG, quiet=True)


def http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def health(*args: str, status_dir: Path) -> tuple[int, list[str]]:
    """`manage.py health ARGS` as a probe runs it: exit status and lines."""
    done = subprocess.run([sys.executable, "manage.py", "health", *args], cwd=BASE_DIR,
                          env=subprocess_env(STATUS_DIR=str(status_dir)), capture_output=True,
                          text=True, timeout=60)
    return done.returncode, done.stdout.splitlines()


def state(status_dir: Path, program: str, *, stale: float = 30):
    return verdict(programs.status_file(status_dir, program), stale=stale)


@pytest.mark.cluster
@pytest.mark.any_broker
@pytest.mark.beside_conformance  # a PostgreSQL of its own; waits: make test's second pass
def test_every_program_is_not_ready_while_postgresql_is_stopped_and_ready_after(
    stoppable_pg, start_process, tmp_path
):
    status_dir = tmp_path / "run"
    env = {"DATABASE_URL": stoppable_pg, "STATUS_DIR": str(status_dir)}
    start_process("qcluster", ready="running.", **env)
    start_process("relay_outbox", "--follow", name="relay", **env)
    start_process("recover_sagas", "--follow", name="recoverer", **env)
    port = free_port()
    start_process("runserver", f"127.0.0.1:{port}", "--noreload", name="web",
                  ready="Quit the server", **env)
    ready = f"http://127.0.0.1:{port}/healthz/ready"
    names = ["qcluster", "relay", "recoverer"]
    wait_until(lambda: all(state(status_dir, n).ready for n in names), timeout=60,
               message=lambda: "every program ready: "
                               + "; ".join(state(status_dir, n).line(n) for n in names))
    assert http(ready) == (200, "ready\n")
    assert health(*names, "--ready", status_dir=status_dir)[0] == 0

    local_postgres.stop(OWN_PG)
    try:
        said = {"qcluster": "no database for", "relay": "relay pass failing for",
                "recoverer": "recovery pass failing for"}
        wait_until(lambda: all(said[n] in state(status_dir, n).reason for n in names),
                   timeout=30, message=lambda: "every program not ready: " + "; ".join(
                       state(status_dir, n).line(n) for n in names))
        code, body = http(ready)
        assert code == 503
        assert body.startswith("not ready: no database for ")
        assert "(OperationalError)" in body
        assert http(f"http://127.0.0.1:{port}/healthz/live") == (200, "live\n")
        code, lines = health(*names, "--ready", status_dir=status_dir)
        assert code == 1
        assert [line.split(":")[0] for line in lines] == names
        assert all("live, not ready: " in line for line in lines), lines
        assert health(*names, status_dir=status_dir)[0] == 0, "not ready, but live"
        # a cluster started while the database is away: live, not ready, and says why
        later = tmp_path / "later"
        start_process("qcluster", name="later", DATABASE_URL=stoppable_pg,
                      STATUS_DIR=str(later))
        wait_until(lambda: "cannot start: OperationalError" in state(later, "qcluster").reason,
                   timeout=30, message=lambda: state(later, "qcluster").line("later"))
        assert state(later, "qcluster").live
    finally:
        local_postgres.start(OWN_PG)
    wait_until(lambda: all(state(status_dir, n).ready for n in names), timeout=60,
               message=lambda: "every program ready again: " + "; ".join(
                   state(status_dir, n).line(n) for n in names))
    wait_until(lambda: state(later, "qcluster").ready, timeout=60,
               message=lambda: state(later, "qcluster").line("later"))
    assert http(ready) == (200, "ready\n")
    assert health(*names, "--ready", status_dir=status_dir)[0] == 0


@pytest.mark.cluster
@pytest.mark.any_broker
@pytest.mark.beside
def test_the_redis_cluster_is_not_ready_while_redis_is_stopped(
    transactional_db, start_process, tmp_path, settings
):
    if local_redis.external():
        pytest.skip("REDIS_URL is not the project-local Redis: it is not ours to stop")
    status_dir = tmp_path / "run"
    start_process("qcluster", name="qcluster-redis", ready="running.",
                  Q_CLUSTER_NAME=settings.REDIS_CLUSTER, STATUS_DIR=str(status_dir))
    wait_until(lambda: state(status_dir, "qcluster-redis").ready, timeout=30,
               message=lambda: state(status_dir, "qcluster-redis").line("qcluster-redis"))
    local_redis.stop()
    try:
        wait_until(lambda: "no Redis for" in state(status_dir, "qcluster-redis").reason,
                   timeout=30,
                   message=lambda: state(status_dir, "qcluster-redis").line("qcluster-redis"))
        assert state(status_dir, "qcluster-redis").live
    finally:
        local_redis.start()
    wait_until(lambda: state(status_dir, "qcluster-redis").ready, timeout=30,
               message=lambda: state(status_dir, "qcluster-redis").line("qcluster-redis"))


@pytest.mark.cluster
@pytest.mark.any_broker
@pytest.mark.beside_conformance  # waits: make test's second pass
def test_a_stopped_process_is_not_live_and_a_killed_one_is_gone(
    transactional_db, start_process, tmp_path
):
    status_dir = tmp_path / "run"
    relay = start_process("relay_outbox", "--follow", name="relay", STATUS_DIR=str(status_dir))
    wait_until(lambda: state(status_dir, "relay").ready, timeout=30,
               message=lambda: state(status_dir, "relay").line("relay"))
    path = programs.status_file(status_dir, "relay")
    light = [sys.executable, "-m", "pgbroker.status", str(path), "--stale", "2"]
    assert subprocess.run([*light, "--ready"], cwd=BASE_DIR).returncode == 0
    os.kill(relay.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: not state(status_dir, "relay", stale=2).live, timeout=30,
                   message="the stopped relay's status to go stale")
        said = state(status_dir, "relay", stale=2).reason
        assert said.startswith("no status written for ")
        assert f"pid {relay.pid}" in said
        done = subprocess.run(light, cwd=BASE_DIR, capture_output=True, text=True)
        assert done.returncode == 1
        assert done.stdout.startswith("relay: not live: no status written for ")
    finally:
        os.kill(relay.pid, signal.SIGCONT)
    wait_until(lambda: state(status_dir, "relay", stale=2).live, timeout=30,
               message="the relay to write again")
    os.kill(relay.pid, signal.SIGKILL)
    wait_until(lambda: not state(status_dir, "relay").live, timeout=30,
               message="the killed relay to be seen gone")
    assert state(status_dir, "relay").reason == f"pid {relay.pid} is not running"
    code, lines = health("relay", status_dir=status_dir)
    assert (code, lines) == (1, [f"relay: not live: pid {relay.pid} is not running"])
    code, lines = health("qcluster", status_dir=status_dir)
    assert code == 1
    assert lines[0].startswith("qcluster: not live: no status file ")


@pytest.mark.usefixtures("db")
@override_settings(ALLOWED_HOSTS=["example.com"], SECURE_SSL_REDIRECT=True)
def test_the_web_probes_answer_before_the_host_and_https_rules(client):
    """An orchestrator probes the pod's address over plain HTTP: no redirect (most probes
    count a 301 as a success), no 400 for a host name the site does not serve."""
    probe = {"HTTP_HOST": "10.1.2.3:8000"}
    live = client.get("/healthz/live", **probe)
    assert (live.status_code, live.content) == (200, b"live\n")
    assert live["Cache-Control"] == "no-store"
    ready = client.get("/healthz/ready/", **probe)
    assert (ready.status_code, ready.content) == (200, b"ready\n")
    assert client.head("/healthz/ready", **probe).status_code == 200
    assert client.post("/healthz/ready", **probe).status_code == 405
    assert client.get("/admin/", **probe).status_code == 400, "the rest keeps the host rule"
    assert client.get("/admin/", HTTP_HOST="example.com").status_code == 301


def test_each_program_of_make_run_knows_its_status_file():
    """The status file's name is the program's in `make run` (devtools/supervise.py), from the
    command line and Q_CLUSTER_NAME; a one-off run or another queue writes none."""
    for name in programs.names():
        program = PROGRAMS[name]
        assert programs.program_of(["manage.py", *program.args], program.env) == name
    assert programs.program_of(["/srv/app/manage.py", "relay_outbox", "--batch", "5",
                                "--follow"], {}) == "relay"
    assert set(programs.names()) == set(PROGRAMS) - {programs.WEB}
    for argv, env in [(["manage.py", "qcluster", "--run-once"], {}),
                      (["manage.py", "qcluster", "-n", "other"], {}),
                      (["manage.py", "qcluster", "--name=other"], {}),
                      (["manage.py", "qcluster"], {"Q_CLUSTER_NAME": "other"}),
                      (["manage.py", "relay_outbox", "--once"], {}),
                      (["manage.py", "runserver"], {}), (["gunicorn"], {}), (["pytest"], {})]:
        assert programs.program_of(argv, env) == "", argv


def test_an_unknown_program_is_refused_in_one_line():
    done = subprocess.run([sys.executable, "manage.py", "health", "relya"], cwd=BASE_DIR,
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "manage.py health: error: argument program: unknown program 'relya'; use one of: "
        "qcluster, qcluster-redis, relay, recoverer"]
