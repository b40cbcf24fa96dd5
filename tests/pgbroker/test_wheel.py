"""pgbroker as a package of its own: the wheel builds, installs into a virtualenv holding only
Django, django-q2, psycopg and pytest, and runs a job enqueued in a minimal project's
transaction after the commit, never after a rollback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from common.db import database_url
from tests.helpers import BASE_DIR, wait_until

pytestmark = pytest.mark.beside_conformance

PINNED = ("Django", "django-q2", "psycopg", "psycopg-binary", "pytest")
DATABASE = "pgbroker_wheel"

SETTINGS = """
import os
SECRET_KEY = "wheel-test"
DEBUG = True
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "pgbroker", "django_q",
                  "shop"]
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": os.environ["PGDATABASE"],
    "HOST": os.environ["PGHOST"], "PORT": os.environ["PGPORT"], "USER": os.environ["PGUSER"],
    "PASSWORD": os.environ.get("PGPASSWORD", ""), "CONN_MAX_AGE": 60}}
Q_CLUSTER = {"name": "shop", "orm": "default", "workers": 2, "timeout": 10,
             "broker_class": "pgbroker.broker.PostgresBroker"}
"""

TASKS = """
import os
from pathlib import Path


def mark(name):
    Path(os.environ["MARKS"], name).touch()
"""

ENQUEUE = """
from django.db import transaction
from django_q.tasks import async_task


class Rollback(Exception):
    pass


with transaction.atomic():
    async_task("shop.tasks.mark", "committed")
try:
    with transaction.atomic():
        async_task("shop.tasks.mark", "rolled-back")
        raise Rollback
except Rollback:
    pass
with transaction.atomic():
    async_task("shop.tasks.mark", "after")
"""


def pinned() -> list[str]:
    lines = (BASE_DIR / "requirements.txt").read_text().splitlines()
    return [line.split()[0] for line in lines if line.split("==")[0] in PINNED]


def run(*args: str | Path, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def database():
    url = database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    parts = urlsplit(url)
    host = parts.hostname or dict(p.split("=", 1) for p in parts.query.split("&") if p)["host"]
    yield {"PGHOST": host.replace("%2F", "/"), "PGPORT": str(parts.port or 5432),
           "PGUSER": parts.username or "", "PGPASSWORD": parts.password or "",
           "PGDATABASE": DATABASE}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def test_the_wheel_installs_alone_and_runs_a_job_only_after_its_commit(tmp_path, database):
    source = tmp_path / "src"
    shutil.copytree(BASE_DIR / "pgbroker", source,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp_path / "dist",
        source, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("django_q2_pgbroker-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "pgbroker/migrations/0001_initial.py" in names
    assert "pgbroker/cluster/dispatcher.py" in names
    assert "pgbroker/management/commands/qcluster.py" in names
    tops = {n.split("/")[0] for n in names}  # the package and its metadata, nothing else
    assert {t for t in tops if not t.endswith(".dist-info")} == {"pgbroker"}
    requires = {line.split(":", 1)[1].strip().split("<")[0].split(">")[0].split("=")[0]
                for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert requires == {"Django", "django-q2", "psycopg"}
    assert "Provides-Extra: redis" in metadata  # redis-py, for pgbroker.reliable_redis only

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin/pip", "install", "--quiet", "--disable-pip-version-check", *pinned(), wheel,
        cwd=tmp_path)
    installed = run(venv / "bin/pip", "list", "--format=freeze", cwd=tmp_path)
    assert "django-q2-pgbroker==" in installed

    project = tmp_path / "project"
    (project / "shop").mkdir(parents=True)
    (project / "settings.py").write_text(textwrap.dedent(SETTINGS))
    (project / "shop/__init__.py").write_text("")
    (project / "shop/tasks.py").write_text(textwrap.dedent(TASKS))
    (project / "enqueue.py").write_text(textwrap.dedent(ENQUEUE))
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "settings", "MARKS": str(marks),
           "PYTHONPATH": str(project), **database}
    django_admin = venv / "bin/django-admin"
    run(django_admin, "migrate", "--no-input", "-v", "0", cwd=project, env=env)
    run(django_admin, "check", cwd=project, env=env)
    run(django_admin, "shell", "-c", (project / "enqueue.py").read_text(), cwd=project, env=env)

    log = (tmp_path / "qcluster.log").open("wb")
    cluster = subprocess.Popen([django_admin, "qcluster"], cwd=project, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: (marks / "after").exists(), timeout=60,
                   message=lambda: (tmp_path / "qcluster.log").read_text())
        assert (marks / "committed").exists()
        assert not (marks / "rolled-back").exists()
    finally:
        cluster.send_signal(signal.SIGTERM)
        cluster.wait(timeout=30)
        log.close()
    assert cluster.returncode == 0, (tmp_path / "qcluster.log").read_text()
