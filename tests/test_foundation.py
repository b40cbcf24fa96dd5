"""The layer everything stands on: settings, PostgreSQL, transactional enqueue, a real cluster."""

import os
import signal
import subprocess
import sys

import pytest
from django.db import connection, transaction
from django_q.tasks import async_task

from devtools.processes import alive, children
from jobs.selectors import queue_drained, queued_tasks
from tests.helpers import BASE_DIR, committed_queue_rows, wait_until
from users.models import EmailSend, User


def _django_setup(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True,
    )


def test_settings_refuse_to_start_with_debug_off_and_no_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update(DEBUG="0", DJANGO_SETTINGS_MODULE="project.settings")
    result = _django_setup(env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_settings_start_with_debug_off_and_a_secret_key():
    env = dict(os.environ, DEBUG="0", SECRET_KEY="x" * 50, ALLOWED_HOSTS="example.com",
               DJANGO_SETTINGS_MODULE="project.settings")
    assert _django_setup(env).returncode == 0


def test_the_database_is_postgresql(db):
    assert connection.vendor == "postgresql"
    with connection.cursor() as cur:
        cur.execute("SHOW server_version_num")
        assert int(cur.fetchone()[0]) >= 140000




# transactional_db: the claim is about what commits, seen from another connection.
def test_a_task_enqueued_in_a_rolled_back_transaction_is_never_queued(transactional_db):
    with pytest.raises(RuntimeError), transaction.atomic():
        async_task("jobs.tasks.cleanup_task_results")
        assert len(queued_tasks()) == 1  # visible inside the transaction...
        assert committed_queue_rows() == 0  # ...and to nobody else
        raise RuntimeError("roll back")
    assert queued_tasks() == []
    assert committed_queue_rows() == 0


def test_a_task_enqueued_in_a_committed_transaction_is_queued_exactly_once(transactional_db):
    with transaction.atomic():
        async_task("jobs.tasks.cleanup_task_results")
        assert committed_queue_rows() == 0
    assert committed_queue_rows() == 1


@pytest.mark.cluster
def test_a_real_qcluster_runs_an_enqueued_task_and_stops_cleanly(qcluster):
    user = User.objects.create_user(username="ada")
    async_task("users.tasks.send_welcome_email", user_id=user.pk)
    wait_until(lambda: EmailSend.objects.filter(user=user).exists(), timeout=30,
               message="the cluster to send the email")
    wait_until(queue_drained, timeout=30, message="the task to be acked")
    children = qcluster.children()
    assert children, "qcluster should have a sentinel"
    assert qcluster.stop() == "terminated"
    assert qcluster.proc.returncode == 0
    assert not [pid for pid in children if os.path.exists(f"/proc/{pid}")]


@pytest.mark.cluster
def test_a_cluster_whose_main_pid_was_sigkilled_leaves_no_process_consuming_the_queue(
    transactional_db, start_process
):
    # django-q2's stock cluster leaves its children running, a ghost cluster that keeps
    # consuming the queue; ours die with their parent (PR_SET_PDEATHSIG).
    cluster = start_process("qcluster", ready="running.")
    dispatcher = cluster.children()
    workers = [pid for d in dispatcher for pid in children(d)]
    assert dispatcher
    assert workers
    os.kill(cluster.pid, signal.SIGKILL)
    cluster.proc.wait(timeout=10)
    wait_until(lambda: not any(alive(pid) for pid in dispatcher + workers), timeout=5,
               message="the dispatcher and the workers to die with the main process")
    assert cluster.stop() == "gone"


def test_side_connections_keep_the_urls_options_and_a_connect_timeout(db):
    """Found reading the code: the side connection copied name, user, password, host and port
    only, dropping the URL's OPTIONS (sslmode, certificates, options), and nothing had a
    connect timeout or keepalives."""
    from django.db import connection

    from common.sideconn import side_cursor

    assert connection.settings_dict["OPTIONS"]["connect_timeout"] == 5
    with side_cursor() as cur:
        params = cur.connection.info.get_parameters()
        # the server's side of the same session, set by the client (on a unix socket the
        # server reads its TCP settings as 0; the lab's tests see them over TCP)
        cur.execute("SELECT current_setting('idle_in_transaction_session_timeout')")
        server = cur.fetchone()
    assert params["connect_timeout"] == "5"
    assert params["keepalives_idle"] == "1"
    assert params["tcp_user_timeout"] == "2000"
    assert server == ("1min",)
