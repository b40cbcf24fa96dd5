from collections.abc import Iterator

import pytest

from project import sideconn
from tests.helpers import Process


@pytest.fixture(autouse=True)
def _no_faults_left_armed(request) -> Iterator[None]:
    """Faults are stored through a separate autocommit connection, outside the test's
    transaction, so a test's rollback does not remove them: delete them after every test."""
    yield
    if "django_db_setup" in request.fixturenames:
        with sideconn.side_cursor() as cur:
            cur.execute("DELETE FROM faults_fault")


@pytest.fixture(scope="session", autouse=True)
def _close_side_connection(django_db_setup) -> Iterator[None]:
    yield
    sideconn.close()  # before pytest-django drops the test database


@pytest.fixture
def start_process(tmp_path) -> Iterator:
    """Start manage.py commands as real processes on the test database; stopped at teardown
    (SIGTERM, then SIGKILL of the group), so no test leaves a cluster consuming the queue."""
    started: list[Process] = []

    def start(*args: str, name: str | None = None, ready: str | None = None, **env: str):
        proc = Process(*args, log_dir=tmp_path, name=name or args[0], **env)
        started.append(proc)
        if ready:
            proc.wait_for_log(ready)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def qcluster(transactional_db, start_process) -> Process:
    """A real `manage.py qcluster`. Needs committed rows: the cluster is another process."""
    return start_process("qcluster", ready="running.")
