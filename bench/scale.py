"""A year of history (`make bench-scale`): what a look at the project costs at millions of rows.

Seeds a scratch database `reliable_scale` (dropped and made anew) with a year of traffic, by
generate_series in a few statements: SCALE_USERS users (default 1,000,000; the three modes in
turn, joined evenly over the 365 days before yesterday), one welcome email each, an outbox
message published for each outbox user (333,334), a job run and a job result per email, and
SCALE_SAGAS finished sagas (default 100,000) with their logs and bookings. Then, as a staff
member of the Viewers group:

- the dashboard page and its panels (p50 / p95 of SCALE_LOOKS, default 10);
- `check_consistency` (recent rows plus the audit's findings) and `--full` for contrast;
- `show_state`, reconciliation, the admin lists;
- one `prune` pass with the default windows: rows deleted, rows/s, and the tables after;
- steady load with pruning on: SCALE_DAYS days of traffic, one day at a time, each followed
  by a prune; the tables' sizes stay flat.

Prints a Markdown table and writes it to var/bench-scale.md.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import sys
import time
from io import StringIO
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.report import write_table  # noqa: E402
from devtools.local_redis import default_redis_url, with_db  # noqa: E402
from experiments.scratch import scratch_database  # noqa: E402

USERS = int(os.environ.get("SCALE_USERS", "1000000"))
SAGAS = int(os.environ.get("SCALE_SAGAS", "100000"))
LOOKS = int(os.environ.get("SCALE_LOOKS", "10"))
DAYS = int(os.environ.get("SCALE_DAYS", "5"))
PER_DAY = int(os.environ.get("SCALE_PER_DAY", str(USERS // 365)))  # the year's own rate

URL = scratch_database("reliable_scale")
os.environ.setdefault("REDIS_URL", with_db(default_redis_url(), 12))
# DEBUG off, as in production (with it on, Django keeps every query in memory)
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("ALLOWED_HOSTS", "localhost")
os.environ.setdefault("SECURE_COOKIES", "0")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")  # the test client speaks plain HTTP
os.environ.update(DATABASE_URL=URL, DJANGO_SETTINGS_MODULE="project.settings",
                  FAULTS_ENABLED="0", LOG_LEVEL="WARNING", DEBUG="0",
                  EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

ROWS: list[tuple[str, str, str]] = []
TABLES = ["users_user", "users_emailsend", "outbox_outboxmessage", "jobs_jobrun",
          "django_q_task", "sagas_saga", "sagas_sagalog", "travel_hotelbooking"]


def record(what: str, value: str, how: str = "") -> None:
    ROWS.append((what, value, how))
    print(f"  {what}: {value}", flush=True)


def sql(statement: str) -> None:
    with connection.cursor() as cur:
        cur.execute(statement)  # no parameters: a % is the modulo operator


def exact(table: str) -> int:
    with connection.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{table}"')  # noqa: S608 (our own table names)
        return cur.fetchone()[0]


def seed_traffic(n: int, *, first: int, newest_days: float, oldest_days: float) -> None:
    """`n` users with ids from `first`, joined evenly from `oldest_days` to `newest_days` ago,
    each with what its signup left: an email, its ledger rows, an outbox message (outbox)."""
    span = oldest_days - newest_days
    sql(f"""
        INSERT INTO users_user (id, password, is_superuser, username, first_name, last_name,
                                email, is_staff, is_active, date_joined, signup_mode)
        SELECT i, '!', false, 'user' || i, '', '', '', false, true,
               now() - make_interval(secs => ({oldest_days} - {span} * (i - {first})::float8
                                             / {n}) * 86400),
               (ARRAY['dual-write', 'outbox', 'que'])[i % 3 + 1]
        FROM generate_series({first}, {first + n - 1}) i""")
    sql(f"""
        INSERT INTO users_emailsend (user_id, key, message_id, sent_at)
        SELECT id, 'welcome-' || id, '<welcome-' || id || '@reliable.example>',
               date_joined + interval '1 second'
        FROM users_user WHERE id >= {first} AND id < {first + n}""")
    sql(f"""
        INSERT INTO outbox_outboxmessage (id, topic, payload, created_at, available_at,
                                          published_at, attempts, last_error)
        SELECT gen_random_uuid(), 'user.welcome_email', jsonb_build_object('user_id', id),
               date_joined, date_joined, date_joined + interval '500 milliseconds', 1, ''
        FROM users_user WHERE id >= {first} AND id < {first + n} AND signup_mode = 'outbox'""")
    sql(f"""
        INSERT INTO jobs_jobrun (key, func, kwargs, attempts, created_at, last_started_at,
                                 finished_at, last_error)
        SELECT 'email:' || id, 'users.tasks.send_welcome_email',
               jsonb_build_object('user_id', id), 1, date_joined, date_joined,
               date_joined + interval '1 second', ''
        FROM users_user WHERE id >= {first} AND id < {first + n}""")
    sql(f"""
        INSERT INTO django_q_task (id, name, func, started, stopped, success, attempt_count)
        SELECT md5('email' || id), 'send ' || id, 'users.tasks.send_welcome_email',
               date_joined, date_joined + interval '1 second', true, 1
        FROM users_user WHERE id >= {first} AND id < {first + n}""")


def seed_sagas(n: int) -> None:
    sql(f"""
        INSERT INTO sagas_saga (id, kind, state, payload, fault_scope, retry_from_seq,
                                created_at, updated_at, last_seq, epoch)
        SELECT i, 'trip', 'completed', jsonb_build_object('customer', 'c' || i), '', 0,
               now() - make_interval(secs => (365 - 364 * i::float8 / {n}) * 86400),
               now() - make_interval(secs => (365 - 364 * i::float8 / {n}) * 86400 - 2),
               8, 1
        FROM generate_series(1, {n}) i""")
    sql("""
        INSERT INTO sagas_sagalog (saga_id, seq, event, step, detail, pid, at)
        SELECT s.id, e.seq, e.event, e.step, '', 1, s.created_at
        FROM sagas_saga s CROSS JOIN (VALUES
            (1, 'SAGA_START', ''), (2, 'STEP_START', 'hotel'), (3, 'STEP_END', 'hotel'),
            (4, 'STEP_START', 'car'), (5, 'STEP_END', 'car'), (6, 'STEP_START', 'flight'),
            (7, 'STEP_END', 'flight'), (8, 'SAGA_END', '')) AS e(seq, event, step)""")
    for table, step in (("travel_hotelbooking", "hotel"), ("travel_carbooking", "car"),
                        ("travel_flightbooking", "flight")):
        sql(f"""
            INSERT INTO {table} (saga_id, step, status, times_booked, booked_at)
            SELECT id, '{step}', 'booked', 1, created_at FROM sagas_saga""")


def resync_sequences() -> None:
    for table in ("users_user", "sagas_saga"):
        sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT coalesce(max(id), 1) FROM {table}))")


def vacuum() -> None:
    old = connection.get_autocommit()
    connection.set_autocommit(True)
    sql("VACUUM ANALYZE")
    connection.set_autocommit(old)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def p50_p95(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{statistics.median(ms):,.0f} / {p95:,.0f} ms"


def viewer() -> Client:
    from django.contrib.auth.models import Group

    from users.models import User

    user = User.objects.create_user(username="viewer", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Viewers"))
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client


def admin() -> Client:
    from users.models import User

    client = Client(HTTP_HOST="localhost")
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    return client


def looks(client: Client, url: str, n: int = LOOKS) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(url)
        samples.append(time.perf_counter() - t0)
        assert response.status_code == 200, (url, response.status_code)
    return samples


def panel_costs() -> str:
    from dashboard import registry

    costs = []
    for panel in registry.panels():
        samples = [timed(lambda p=panel: p.context(registry.Snapshot())) for _ in range(5)]
        costs.append(f"{panel.name} {statistics.median(samples) * 1000:,.0f}")
    return ", ".join(costs) + " ms"


def quiet(*args: str) -> None:
    with contextlib.suppress(SystemExit):  # check_consistency's exit status: not measured
        call_command(*args, stdout=StringIO(), stderr=StringIO())


def main() -> None:
    print(f"a year of history: {USERS:,} users, {SAGAS:,} sagas, on {os.cpu_count()} cores",
          flush=True)
    setup_test_environment()  # the test client without a test runner
    call_command("collectstatic", "--noinput", verbosity=0)  # as `make run` does (DEBUG off)
    call_command("migrate", verbosity=0)
    from sagas import services as sagas
    from users import services as users
    from users.services import reconcile_welcome_emails

    t0 = time.perf_counter()
    seed_traffic(USERS, first=1, newest_days=1, oldest_days=365)
    seed_sagas(SAGAS)
    resync_sequences()
    seeded = time.perf_counter() - t0
    from dashboard import tallies

    tallies.fold()  # as the "fold tallies" schedule has, every minute of the year
    vacuum()
    sizes = {t: exact(t) for t in TABLES}
    record("seeded a year", f"{seeded:,.0f} s (+ VACUUM ANALYZE)",
           ", ".join(f"{t} {n:,}" for t, n in sizes.items()))

    audited = timed(lambda: [users.audit_welcome_emails() for _ in range(USERS // 200_000 + 1)])
    audited_sagas = timed(lambda: [sagas.audit_sagas() for _ in range(SAGAS // 200_000 + 1)])
    record("the audit catching up with a year (once; then a minute's rows per pass)",
           f"{USERS / audited:,.0f} users/s, {SAGAS / audited_sagas:,.0f} sagas/s",
           f"{audited:.1f} s and {audited_sagas:.1f} s")

    watcher = viewer()
    record("dashboard panels, as a viewer (every 2 s)",
           p50_p95(looks(watcher, "/admin/dashboard/panels/")), f"p50 / p95 of {LOOKS}")
    record("dashboard page, as a viewer", p50_p95(looks(watcher, "/admin/dashboard/")),
           f"p50 / p95 of {LOOKS}")
    record("each panel's reads (median of 5)", panel_costs(), "the panels refresh reads these")
    record("`check_consistency`",
           p50_p95([timed(lambda: quiet("check_consistency")) for _ in range(5)]),
           "recent rows + the audit's findings; p50 / p95 of 5")
    full = timed(lambda: quiet("check_consistency", "--full"))
    record("`check_consistency --full`", f"{full:,.1f} s",
           "every row, for contrast")
    out = StringIO()
    shown = timed(lambda: call_command("show_state", stdout=out))
    record("`show_state`", f"{shown * 1000:,.0f} ms, {len(out.getvalue().splitlines())} lines",
           "the last 50 users and every one counted")
    reconciled = timed(lambda: reconcile_welcome_emails(older_than=60))
    record("reconciliation pass", f"{reconciled * 1000:,.0f} ms",
           "outbox and que, within RECONCILE_WINDOW_DAYS")
    boss = admin()
    for label, url in [("users", "/admin/users/user/"),
                       ("email ledger", "/admin/users/emailsend/"),
                       ("outbox", "/admin/outbox/outboxmessage/"),
                       ("job runs", "/admin/jobs/jobrun/"), ("sagas", "/admin/sagas/saga/"),
                       ("job results", "/admin/django_q/success/")]:
        record(f"admin list: {label}", p50_p95(looks(boss, url, 5)), "p50 / p95 of 5")

    from retention import services as retention

    t0 = time.perf_counter()
    outcomes = retention.prune()
    took = time.perf_counter() - t0
    deleted = sum(o.deleted for o in outcomes)
    record("one prune pass, default windows", f"{deleted:,} rows in {took:,.1f} s "
           f"({deleted / took:,.0f} rows/s)",
           "; ".join(f"{o.rule} {o.deleted:,}" for o in outcomes if o.deleted))
    vacuum()
    after = {t: exact(t) for t in TABLES}
    record("tables after the prune", ", ".join(f"{t} {n:,}" for t, n in after.items()),
           "users stay (the store of record); the rest holds its window")
    record("dashboard panels after the prune",
           p50_p95(looks(watcher, "/admin/dashboard/panels/")), f"p50 / p95 of {LOOKS}")

    steady(retention)
    write_table(ROWS, "bench-scale.md")
    connection.close()
    scratch_database("reliable_scale", drop_only=True)  # a gigabyte: not kept


def steady(retention) -> None:
    """SCALE_DAYS more days at the year's rate, a day at a time: the clock moves on a day (what
    prune deletes by is aged by a day), a day of signups arrives, the audit and a prune run.
    The pruned tables stay at their window's size."""
    from users import services as users
    from users.models import User

    first = (User.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
    seen = []
    for _ in range(DAYS):
        for table, column in (("users_emailsend", "sent_at"),
                              ("outbox_outboxmessage", "published_at"),
                              ("jobs_jobrun", "finished_at"), ("django_q_task", "stopped"),
                              ("sagas_saga", "updated_at")):
            sql(f"UPDATE {table} SET {column} = {column} - interval '1 day'")
        seed_traffic(PER_DAY, first=first, newest_days=0.01, oldest_days=1)
        first += PER_DAY
        resync_sequences()
        users.audit_welcome_emails()
        retention.prune()
        seen.append({t: exact(t) for t in ("users_emailsend", "outbox_outboxmessage",
                                           "jobs_jobrun", "django_q_task")})
    for table in seen[0]:
        record(f"steady load: {table}", " → ".join(f"{s[table]:,}" for s in seen),
               f"rows after each of {DAYS} more days of {PER_DAY:,} signups and a prune")


if __name__ == "__main__":
    main()
