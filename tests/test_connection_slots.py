"""At max_connections: every process says so in one line, waits for a slot, and goes on when
one frees; no job is parked because the database had no connection for it.

PostgreSQL refuses a connection beyond max_connections ("sorry, too many clients already"), a
role's or a database's CONNECTION LIMIT, all SQLSTATE 53300. Superusers are exempt from the
last two, so the processes here log in as a role of their own whose limit the test lowers.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django_q.models import Success
from django_q.tasks import async_task

from common.db import database_url
from jobs.models import JobRun
from pgbroker.models import Job
from tests.helpers import free_port, wait_until
from users import services
from users.models import EmailSend, Mode, User

pytestmark = [pytest.mark.cluster, pytest.mark.any_broker, pytest.mark.beside_lab]
ROLE = "reliable_slots"


def sql(statement: str) -> None:
    with connection.cursor() as cur:
        cur.execute(statement)


def role_connections() -> int:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [ROLE])
        return cur.fetchone()[0]


@pytest.fixture
def limited_role(transactional_db):
    with connection.cursor() as cur:
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if not cur.fetchone()[0]:
            pytest.skip("needs a superuser to make a role (DATABASE_URL's role is not one)")
    sql(f"DROP ROLE IF EXISTS {ROLE}")
    sql(f"CREATE ROLE {ROLE} LOGIN")
    sql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {ROLE}")
    sql(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {ROLE}")
    head, _, rest = database_url().partition("://")
    _, _, host = rest.partition("@")
    yield f"{head}://{ROLE}@{host}"
    sql(f"ALTER ROLE {ROLE} CONNECTION LIMIT -1")
    sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}'")
    wait_until(lambda: role_connections() == 0, timeout=10, message="its sessions to end")
    sql(f"DROP OWNED BY {ROLE}")
    sql(f"DROP ROLE {ROLE}")


@pytest.mark.parametrize("warm", [False, True], ids=["key session refused",
                                                     "job's connection refused"])
def test_jobs_wait_for_a_connection_slot_and_none_is_parked(limited_role, start_process, warm):
    cluster = start_process("qcluster", ready="running.", DATABASE_URL=limited_role,
                            Q_WORKERS="2", Q_MAX_ATTEMPTS="2", JOB_MAX_ATTEMPTS="2")
    if warm:  # the workers hold their key sessions; a job's own connection is what is refused
        with transaction.atomic():
            for i in range(20):
                async_task("math.floor", i + 0.5)
        wait_until(lambda: Success.objects.count() == 20, timeout=30, message="the warm-up")
    # no slot left for a new connection (the workers' Django connections are not open yet)
    sql(f"ALTER ROLE {ROLE} CONNECTION LIMIT {role_connections()}")
    n = 6
    with transaction.atomic():
        for i in range(n):
            async_task(services.CREATE_USER_TASK, name=f"u{i}", mode=Mode.QUE,
                       signup_id=f"s{i}")
    wait_until(lambda: "too many connections" in cluster.log(), timeout=30,
               message=lambda: "the cluster to say it has no slot:\n" + cluster.log()[-3000:])
    wait_until(lambda: Job.objects.filter(attempts__gt=0).count() == 0
               and Job.objects.count() == n, timeout=10, interval=0.5,
               message="the refused jobs back in the queue, no attempt counted")
    sql(f"ALTER ROLE {ROLE} CONNECTION LIMIT -1")  # a slot frees
    wait_until(lambda: EmailSend.objects.count() == n, timeout=60,
               message=lambda: "every signup's email:\n" + cluster.log()[-3000:])
    assert not Job.objects.parked().exists()
    assert not JobRun.objects.parked().exists()
    assert User.objects.count() == n
    log = cluster.log()
    assert log.count("PostgreSQL has no connection slot for a worker") == 1, log[-3000:]
    assert "PostgreSQL has connection slots again" in log


def test_the_relay_and_the_recoverer_say_so_once_and_go_on(limited_role, start_process):
    from outbox.models import OutboxMessage
    from outbox.services import publish

    relay = start_process("relay_outbox", "--follow", name="relay", DATABASE_URL=limited_role,
                          ready="relaying outbox messages")
    recoverer = start_process("recover_sagas", "--follow", "--interval", "0.2",
                              name="recoverer", ready="recovering", DATABASE_URL=limited_role)
    sql(f"ALTER ROLE {ROLE} CONNECTION LIMIT 0")
    sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}'")
    with transaction.atomic():
        message = publish(topic=services.WELCOME_TOPIC, payload={"user_id": 1})
    wait_until(lambda: "too many connections" in relay.log()
               and "too many connections" in recoverer.log(), timeout=30,
               message=lambda: "both to say so:\n" + relay.log()[-2000:] + recoverer.log())
    assert OutboxMessage.objects.get(pk=message.pk).published_at is None
    sql(f"ALTER ROLE {ROLE} CONNECTION LIMIT -1")  # slots again
    wait_until(lambda: OutboxMessage.objects.get(pk=message.pk).published_at is not None,
               timeout=30, message=lambda: "the message to go:\n" + relay.log()[-2000:])
    wait_until(lambda: "works again" in relay.log() and "works again" in recoverer.log(),
               timeout=30, message="both to say they work again")
    for proc, what in ((relay, "relay pass failed"), (recoverer, "recovery pass failed")):
        said = [line for line in proc.log().splitlines() if what in line]
        # for the ended session (if it noticed), then the want of a slot: not once per try
        assert 1 <= len(said) <= 2, said
        assert "too many connections" in said[-1]


def test_the_web_answers_503_with_retry_after_and_serves_again(limited_role, start_process,
                                                               client):
    import urllib.error
    import urllib.request

    port = free_port()
    web = start_process("runserver", f"127.0.0.1:{port}", "--noreload", name="web",
                        ready="Quit the server", DATABASE_URL=limited_role)
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    request = urllib.request.Request(f"http://127.0.0.1:{port}/admin/dashboard/", headers={
        "Cookie": f"sessionid={client.cookies['sessionid'].value}"})

    def status() -> tuple[int, dict, str]:
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    assert status()[0] == 200
    sql(f"ALTER ROLE {ROLE} CONNECTION LIMIT 0")
    sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}'")
    for _ in range(3):
        code, headers, body = status()
        assert (code, headers.get("Retry-After")) == (503, "5")
        assert "The database is full for a moment" in body
    assert web.log().count("PostgreSQL has no connection slot for the web process") == 1
    sql(f"ALTER ROLE {ROLE} CONNECTION LIMIT -1")
    assert status()[0] == 200
