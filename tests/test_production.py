"""The production profile (docs/production.md): DEBUG off needs only SECRET_KEY and
ALLOWED_HOSTS and passes `check --deploy`; every environment setting is checked by
common/env.py and a bad one is one line; the development key is born 0600; with DEBUG off the
development machinery (fault injection, experiments, django_extensions) is not installed: no
command, admin page or dashboard control of it exists until FAULTS_ENABLED /
EXPERIMENTS_ENABLED switch it on; `make run`'s web program is gunicorn + whitenoise with DEBUG
off; the Makefile passes make's variables to commands without splicing them into shell
text."""

from __future__ import annotations

import configparser
import http.client
import json
import math
import os
import re
import secrets
import stat
import subprocess
import sys
import threading
from pathlib import Path

import django_extensions
import pytest
from django.core.management import find_commands

from common import env
from devtools import supervise
from faults.models import Fault
from tests.helpers import BASE_DIR, free_port, subprocess_env, wait_until
from users.models import User

KEY = secrets.token_urlsafe(50)  # as docs/production.md makes one
PRODUCTION = {"DEBUG": "0", "SECRET_KEY": KEY, "ALLOWED_HOSTS": "example.com"}
# What the tests' own environment might set and a production run must not inherit (the
# browser tests set DJANGO_ALLOW_ASYNC_UNSAFE for Playwright: check --deploy refuses it).
OURS = ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "FAULTS_ENABLED", "EXPERIMENTS_ENABLED",
        "SECURE_SSL_REDIRECT",
        "SECURE_COOKIES", "SECURE_HSTS_SECONDS", "TRUST_X_FORWARDED_PROTO", "STATIC_ROOT",
        "DJANGO_ALLOW_ASYNC_UNSAFE")


def _environ(base: dict[str, str] | None = None, /, **extra: str) -> dict[str, str]:
    environ = {k: v for k, v in (os.environ if base is None else base).items() if k not in OURS}
    return {**environ, **extra}


def _manage(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=environ,
                          capture_output=True, text=True, timeout=60)


# --- common/env.py ---------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("False", False), ("no", False), ("off", False), ("", True), (None, True),
])
def test_boolean(value, expected):
    environ = {} if value is None else {"DEBUG": value}
    assert env.boolean("DEBUG", True, environ=environ) is expected


@pytest.mark.parametrize(("helper", "value", "message"), [
    (lambda e: env.boolean("DEBUG", True, environ=e), "maybe",
     "DEBUG must be 1/0, true/false, yes/no or on/off, not 'maybe'"),
    (lambda e: env.integer("Q_TIMEOUT", 30, low=1, high=86_400, environ=e), "abc",
     "Q_TIMEOUT must be a whole number from 1 to 86,400, not 'abc'"),
    (lambda e: env.integer("Q_TIMEOUT", 30, low=1, high=86_400, environ=e), "-1",
     "Q_TIMEOUT must be a whole number from 1 to 86,400, not '-1'"),
    (lambda e: env.integer("Q_TIMEOUT", 30, low=1, high=86_400, environ=e), "2.5",
     "Q_TIMEOUT must be a whole number from 1 to 86,400, not '2.5'"),
    (lambda e: env.number("SAGA_LEASE_SECONDS", 10, low=0.1, high=3600, environ=e), "nan",
     "SAGA_LEASE_SECONDS must be a number from 0.1 to 3,600, not 'nan'"),
    (lambda e: env.number("SAGA_LEASE_SECONDS", 10, low=0.1, high=3600, environ=e), "inf",
     "SAGA_LEASE_SECONDS must be a number from 0.1 to 3,600, not 'inf'"),
    (lambda e: env.number("SAGA_LEASE_SECONDS", 10, low=0.1, high=3600, environ=e), "-1",
     "SAGA_LEASE_SECONDS must be a number from 0.1 to 3,600, not '-1'"),
    (lambda e: env.number("SAGA_LEASE_SECONDS", 10, low=0.1, high=3600, environ=e), "1e999",
     "SAGA_LEASE_SECONDS must be a number from 0.1 to 3,600, not '1e999'"),
    (lambda e: env.choice("LOG_LEVEL", "WARNING", ["INFO", "WARNING"], upper=True, environ=e),
     "loud", "unknown LOG_LEVEL 'LOUD'; use one of: INFO, WARNING"),
])
def test_a_bad_value_is_one_line_naming_the_variable_the_value_and_what_is_allowed(
    helper, value, message
):
    name = next(w for w in message.split() if w.isupper() and w.isidentifier())
    with pytest.raises(env.EnvError) as raised:
        helper({name: value})
    assert str(raised.value) == message
    assert "\n" not in str(raised.value)


def test_good_values_and_defaults():
    e = {"A": " 42 ", "B": "0.25", "C": "info", "D": "a, b,,c ", "E": "  "}
    assert env.integer("A", 1, low=1, high=100, environ=e) == 42
    assert env.number("B", 1.0, low=0, high=1, environ=e) == 0.25
    assert env.choice("C", "WARNING", ["INFO", "WARNING"], upper=True, environ=e) == "INFO"
    assert env.strings("D", [], environ=e) == ["a", "b", "c"]
    assert env.text("E", "default", environ=e) == "default"  # blank is unset
    assert env.integer("MISSING", 7, low=1, high=2, environ=e) == 7  # defaults are not checked
    assert math.isfinite(env.number("MISSING", 1, low=0, high=2, environ=e))


def test_a_missing_required_variable_never_shows_a_value():
    with pytest.raises(env.EnvError, match="^SECRET_KEY is not set: why$"):
        env.required("SECRET_KEY", "why", environ={"SECRET_KEY": " "})


# --- the development key ---------------------------------------------------------------------

def test_the_development_key_is_born_0600_complete_and_kept(tmp_path, monkeypatch):
    path = tmp_path / "var" / "secret_key"
    seen = []
    real_link = os.link

    def link(src, dst):  # the moment the key gets its name: already 0600 and complete
        seen.append((stat.S_IMODE(os.stat(src).st_mode), Path(src).read_text()))
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    old_umask = os.umask(0)  # even with a umask that lets everyone read
    try:
        key = env.secret_file(path)
    finally:
        os.umask(old_umask)
    assert seen == [(0o600, key)]
    assert len(key) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary file left
    assert env.secret_file(path) == key  # kept


def test_processes_that_start_together_share_one_key(tmp_path):
    path = tmp_path / "secret_key"
    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(env.secret_file(path)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1
    assert path.read_text() == keys[0]


def test_a_key_file_others_can_read_is_restricted(tmp_path):
    path = tmp_path / "secret_key"
    path.write_text("k" * 50)
    path.chmod(0o644)
    assert env.secret_file(path) == "k" * 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- manage.py with DEBUG off ----------------------------------------------------------------

def test_check_deploy_with_debug_off_reports_no_issues():
    result = _manage("check", "--deploy", "--fail-level", "WARNING",
                     environ=_environ(**PRODUCTION))
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_the_plain_http_knobs_relax_exactly_the_https_checks():
    result = _manage("check", "--deploy", environ=_environ(
        **PRODUCTION, SECURE_SSL_REDIRECT="0", SECURE_COOKIES="0", SECURE_HSTS_SECONDS="0"))
    assert sorted(set(re.findall(r"security\.W\d+", result.stderr))) == [
        "security.W004", "security.W008", "security.W012", "security.W016"]


@pytest.mark.parametrize(("missing", "starts"), [
    ("SECRET_KEY", "SECRET_KEY is not set: "), ("ALLOWED_HOSTS", "ALLOWED_HOSTS is not set: ")])
def test_debug_off_without_a_required_variable_is_one_line(missing, starts):
    environ = _environ(**{k: v for k, v in PRODUCTION.items() if k != missing})
    result = _manage("check", environ=environ)
    assert result.returncode == 1
    assert result.stderr.startswith(starts)
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_bad_environment_value_stops_manage_py_with_one_line():
    for name, value, allowed in [
        ("Q_TIMEOUT", "abc", "a whole number from 1 to 86,400"),
        ("SAGA_LEASE_SECONDS", "nan", "a number from 0.1 to 86,400"),
        ("DEBUG", "maybe", "1/0, true/false, yes/no or on/off"),
    ]:
        result = _manage("check", environ=_environ(**{name: value}))
        assert result.returncode == 1
        assert result.stderr == f"{name} must be {allowed}, not {value!r}\n"
    result = _manage("check", environ=_environ(DATABASE_URL="mysql://u:hunter2@h/db"))
    assert result.returncode == 1
    assert "hunter2" not in result.stderr  # a URL may hold a password: never shown
    assert result.stderr.count("\n") == 1


# --- the development machinery, off with DEBUG off -----------------------------------------

SWITCHES = {"FAULTS_ENABLED": "1", "EXPERIMENTS_ENABLED": "1"}
# Every command of the development machinery, read from the code: the faults app's, the
# experiments app's and django_extensions' (reset_db, print_settings, runscript, ...).
MACHINERY = {
    "faults": {"faults"},
    "experiments": {"experiment"},
    "django_extensions": set(find_commands(str(Path(django_extensions.__file__).parent
                                                / "management"))),
}


def _commands(environ: dict[str, str]) -> set[str]:
    result = _manage("help", "--commands", environ=environ)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_debug_off_has_no_command_of_the_development_machinery_until_switched_on():
    assert {"faults", "experiment"} <= _commands(_environ())  # development: all of it
    assert {"reset_db", "print_settings", "runscript"} <= MACHINERY["django_extensions"]
    production = _commands(_environ(**PRODUCTION))
    assert {"migrate", "qcluster", "relay_outbox", "prune", "create_user"} <= production
    assert not production & set().union(*MACHINERY.values())
    switched_on = _commands(_environ(**PRODUCTION, **SWITCHES))
    assert switched_on - production == MACHINERY["faults"] | MACHINERY["experiments"]
    only_faults = _commands(_environ(**PRODUCTION, FAULTS_ENABLED="1"))
    assert only_faults - production == MACHINERY["faults"]


@pytest.mark.parametrize("command", [["faults", "arm", "signup.part2", "--action", "raise"],
                                     ["faults", "redis", "stop"],
                                     ["experiment", "--preset", "smoke"],
                                     ["print_settings"], ["show_urls"]])
def test_debug_off_a_command_of_the_machinery_is_unknown(command):
    result = _manage(*command, environ=_environ(subprocess_env(), **PRODUCTION))
    assert result.returncode == 1
    assert result.stderr.startswith(f"Unknown command: '{command[0]}'"), result.stderr


def test_faults_arm_needs_faults_enabled_with_debug_off(db):
    environ = _environ(subprocess_env(), **PRODUCTION)
    result = _manage("faults", "arm", "signup.part2", "--action", "raise", environ=environ)
    assert result.returncode == 1
    assert not Fault.objects.filter(point="signup.part2").exclude(action="").exists()
    # Only an explicit FAULTS_ENABLED=1 turns it on with DEBUG off.
    result = _manage("faults", "arm", "signup.part2", "--action", "raise",
                     environ={**environ, "FAULTS_ENABLED": "1"})
    assert result.returncode == 0, result.stderr
    assert Fault.objects.filter(point="signup.part2", action="raise").exists()


def test_experiments_without_faults_are_refused_in_one_line():
    result = _manage("check", environ=_environ(**PRODUCTION, EXPERIMENTS_ENABLED="1"))
    assert result.returncode == 1
    assert result.stderr == ("EXPERIMENTS_ENABLED is on but FAULTS_ENABLED is off: an "
                             "experiment injects faults; set FAULTS_ENABLED=1 too, or "
                             "EXPERIMENTS_ENABLED=0\n")
    # with DEBUG on too: an explicit FAULTS_ENABLED=0 leaves experiments off by default
    result = _manage("help", "--commands", environ=_environ(FAULTS_ENABLED="0"))
    assert result.returncode == 0, result.stderr
    assert "experiment" not in result.stdout.split()


# What a signed-in superuser gets from the admin in a process with DEBUG off (Django's test
# client inside `manage.py shell`, on the test database): {path: [status, page]}. Static files
# are named as in development (no collectstatic manifest needed: the pages are the question).
PROBE = """
import json, os
from django.conf import settings
from django.test import Client, override_settings
from users.models import User

plain = {**settings.STORAGES, "staticfiles": {
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
with override_settings(STORAGES=plain):
    client = Client(HTTP_HOST="example.com")
    client.force_login(User.objects.get(username="boundary"))
    seen = {}
    for method, path in json.loads(os.environ["PROBE"]):
        r = getattr(client, method)(path, secure=True)
        seen[f"{method} {path}"] = [r.status_code, r.content.decode()]
print("PROBE " + json.dumps(seen))
"""
PAGES = {  # the development machinery's pages: 404 while it is not installed
    "faults": ["/admin/faults/", "/admin/faults/fault/", "/admin/faults/fault/list-points/"],
    "experiments": ["/admin/experiments/", "/admin/experiments/experiment/",
                    "/admin/experiments/experiment/start/"],
}
# the dashboard's fault panel, its controls (arm a fault point, break Redis), the talk's steps
DASHBOARD_FAULTS = ['id="panel-faults"', 'id="fault-form"', 'id="redis-form"',
                    'id="talk-steps"']


def _probe(environ: dict[str, str], requests: list[tuple[str, str]]) -> dict[str, list]:
    result = _manage("shell", "-c", PROBE, environ={**environ, "PROBE": json.dumps(requests)})
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE "))


def test_debug_off_the_admin_and_the_dashboard_have_no_page_or_control_of_the_machinery(
    transactional_db,
):
    User.objects.create_superuser(username="boundary", email="b@example.com", password="x" + KEY)
    requests = [("get", path) for paths in PAGES.values() for path in paths]
    requests += [("get", "/admin/"), ("get", "/admin/dashboard/"),
                 ("post", "/admin/dashboard/do/fault/"), ("post", "/admin/dashboard/do/redis/")]
    production = _environ(subprocess_env(), **PRODUCTION)

    seen = _probe(production, requests)
    for paths in PAGES.values():
        for path in paths:
            assert seen[f"get {path}"][0] == 404, path
    index = seen["get /admin/"][1]
    assert seen["get /admin/"][0] == 200
    assert 'href="/admin/users/' in index  # the index itself, with the project's apps
    assert 'href="/admin/faults/' not in index
    assert 'href="/admin/experiments/' not in index
    status, dashboard = seen["get /admin/dashboard/"]
    assert status == 200
    assert 'id="signup-form"' in dashboard
    assert 'id="panel-redis"' in dashboard
    assert not [marker for marker in DASHBOARD_FAULTS if marker in dashboard]
    # a control that is not registered is no control: refused, nothing armed or stopped
    assert seen["post /admin/dashboard/do/fault/"][0] == 403
    assert seen["post /admin/dashboard/do/redis/"][0] == 403

    seen = _probe({**production, **SWITCHES}, requests[:-2])  # switched on: all of it is back
    for path in [*PAGES["faults"][:2], *PAGES["experiments"][:2]]:
        assert seen[f"get {path}"][0] == 200, path
    index = seen["get /admin/"][1]
    assert 'href="/admin/faults/' in index
    assert 'href="/admin/experiments/' in index
    dashboard = seen["get /admin/dashboard/"][1]
    assert [marker for marker in DASHBOARD_FAULTS if marker in dashboard] == DASHBOARD_FAULTS


def test_debug_off_migrates_without_the_machinery_and_with_it_later(transactional_db):
    """A database made with DEBUG off has no fault or experiment table; switching them on
    later migrates them in (no migration of another app depends on them), and the Viewers and
    Operators groups get their view permissions (dashboard.groups)."""
    from experiments.scratch import scratch_database

    name = "test_reliable_boundary"
    url = scratch_database(name)
    try:
        environ = _environ(subprocess_env(), **PRODUCTION, DATABASE_URL=url)
        result = _manage("migrate", "--no-input", "-v", "0", environ=environ)
        assert result.returncode == 0, result.stderr
        tables = _sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert "users_user" in tables
        assert not [t for t in tables if t.startswith(("faults_", "experiments_"))]
        result = _manage("migrate", "--no-input", "-v", "0", environ={**environ, **SWITCHES})
        assert result.returncode == 0, result.stderr
        assert {"faults_fault", "experiments_experiment"} <= set(_sql(
            url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        granted = _sql(url, """
            SELECT g.name || ' ' || p.codename FROM auth_group g
              JOIN auth_group_permissions gp ON gp.group_id = g.id
              JOIN auth_permission p ON p.id = gp.permission_id
              JOIN django_content_type c ON c.id = p.content_type_id
             WHERE c.app_label IN ('faults', 'experiments')""")
        assert sorted(granted) == ["Operators view_experiment", "Operators view_fault",
                                   "Viewers view_experiment", "Viewers view_fault"]
    finally:
        scratch_database(name, drop_only=True)


def _sql(url: str, query: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(query)]


# --- make run's web program ------------------------------------------------------------------

def test_make_runs_web_program_follows_debug(tmp_path):
    def parsed(environ):
        conf = configparser.RawConfigParser()
        conf.read_string(supervise.config(list(supervise.PROGRAMS), var=tmp_path,
                                          python=sys.executable, run_addr="127.0.0.1:8200",
                                          env=environ))
        return conf

    dev, prod = parsed({}), parsed({"DEBUG": "0", "WEB_CONCURRENCY": "3"})
    assert dev["program:web"]["command"].endswith("manage.py runserver 127.0.0.1:8200 --noreload")
    web = prod["program:web"]["command"].split()
    assert web[0] == str(Path(sys.executable).parent / "gunicorn")
    assert web[1:6] == ["project.wsgi:application", "--bind", "127.0.0.1:8200", "--workers", "3"]
    assert f"--control-socket {tmp_path}/run/gunicorn.ctl" in " ".join(web)
    for name in supervise.PROGRAMS:
        if name != "web":
            assert dict(dev[f"program:{name}"]) == dict(prod[f"program:{name}"])
    with pytest.raises(env.EnvError,
                       match="WEB_CONCURRENCY must be a whole number from 1 to 64, not '0'"):
        parsed({"DEBUG": "0", "WEB_CONCURRENCY": "0"})


def _get(port: int, path: str, *, https: bool = True, method: str = "GET", body: str = "",
         headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    """A request as a TLS-terminating proxy on this host passes it on (X-Forwarded-Proto)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers={
            **({"X-Forwarded-Proto": "https"} if https else {}), **(headers or {})})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def _cookies(response: http.client.HTTPResponse) -> dict[str, str]:
    return dict(c.split(";")[0].split("=", 1)
                for c in response.headers.get_all("Set-Cookie") or [])


@pytest.mark.cluster
@pytest.mark.any_broker
@pytest.mark.beside_lab  # it waits on gunicorn: make test's second pass
def test_gunicorn_serves_the_admin_and_its_css(transactional_db, tmp_path):
    """`make run`'s web program with DEBUG=0, on the test database: collectstatic, gunicorn
    under supervisord, whitenoise for the CSS, HTTPS rules, a login, the access log."""
    User.objects.create_superuser(username="ops", email="ops@example.com", password="pw-" + KEY)
    port = free_port()
    environ = _environ(subprocess_env(), **{**PRODUCTION, "ALLOWED_HOSTS": "127.0.0.1"},
                       TRUST_X_FORWARDED_PROTO="1", STATIC_ROOT=str(tmp_path / "static"),
                       WEB_CONCURRENCY="1")
    try:
        assert supervise.start(["web"], var=tmp_path, python=sys.executable, env=environ,
                               run_addr=f"127.0.0.1:{port}") == 0
        page, html = wait_until(lambda: _try_get(port, "/admin/login/"), timeout=15,
                                message="gunicorn to answer")
        assert page.status == 200
        assert page.headers["Server"] == "gunicorn"
        assert "max-age=31536000; includeSubDomains; preload" in \
            page.headers["Strict-Transport-Security"]
        cookies = _cookies(page)
        assert all("; Secure" in c for c in page.headers.get_all("Set-Cookie"))

        css = re.search(rb'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', html)
        assert css, html[:2000]
        sheet, body = _get(port, css.group(1).decode())
        assert sheet.status == 200
        assert sheet.headers["Content-Type"].startswith("text/css")
        assert "immutable" in sheet.headers["Cache-Control"]
        assert b".module" in body  # the admin's stylesheet itself

        plain, _ = _get(port, "/admin/login/", https=False)  # no TLS: sent to https://
        assert plain.status == 301
        assert plain.headers["Location"] == f"https://127.0.0.1:{port}/admin/login/"

        found = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        assert found, html[:2000]
        token = found.group(1).decode()
        login, _ = _get(port, "/admin/login/?next=/admin/", method="POST",
                        body=f"csrfmiddlewaretoken={token}&username=ops&password=pw-{KEY}",
                        headers={"Content-Type": "application/x-www-form-urlencoded",
                                 "Cookie": f"csrftoken={cookies['csrftoken']}",
                                 "Origin": f"https://127.0.0.1:{port}"})
        assert login.status == 302, login.headers
        session = _cookies(login)["sessionid"]
        home, _ = _get(port, "/admin/", headers={"Cookie": f"sessionid={session}"})
        assert home.status == 200

        log = (tmp_path / "log" / "web.log").read_text()
        assert f'"GET {css.group(1).decode()} HTTP/1.1" 200' in log
        assert '"POST /admin/login/?next=/admin/ HTTP/1.1" 302' in log
        assert KEY not in log
    finally:
        supervise.stop(var=tmp_path, python=sys.executable)


def _try_get(port: int, path: str):
    try:
        return _get(port, path)
    except OSError:
        return None


# --- the Makefile ----------------------------------------------------------------------------

def _make(*args: str) -> subprocess.CompletedProcess:
    """make with `ready` taken as done and manage.py replaced by printf: what the command
    would be given, one argument a line."""
    return subprocess.run(["make", "--no-print-directory", "-o", "ready", *args,
                           "MANAGE=printf '%s\\n'"], cwd=BASE_DIR, capture_output=True,
                          text=True, timeout=30)


def test_make_passes_values_as_arguments_never_as_shell_text():
    result = _make("create-user", 'name=x"; echo hi; "', "fail=part1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "create_user", 'x"; echo hi; "', "--mode", "dual-write", "--fail", "part1"]
    result = _make("book-trip", "customer=$(id) `id`", "crash=car")
    assert result.stdout.splitlines() == [
        "book_trip", "$(id) `id`", "--wait", "--timeout", "60", "--crash", "car"]


@pytest.mark.parametrize(("target", "usage"), [
    ("show-saga", "usage: make show-saga id=N"),
    ("create-user", "usage: make create-user name=NAME "),
    ("book-trip", "usage: make book-trip customer=NAME "),
])
def test_make_without_a_required_value_prints_its_usage_line(target, usage):
    result = subprocess.run(["make", "--no-print-directory", target], cwd=BASE_DIR,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert result.stderr.startswith(usage)
    assert result.stdout == ""  # nothing started: not even the database
