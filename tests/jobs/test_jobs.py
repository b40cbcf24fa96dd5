import pytest
from django_q.tasks import async_task

from dashboard.selectors import consistency_checks
from faults import services as faults
from jobs import services
from jobs.models import JobRun, RunState
from jobs.selectors import queue_drained, queued_tasks, uses_pgbroker
from pgbroker.models import Job
from tests.helpers import wait_until
from users.models import EmailSend, User

# transactional_db: run_job commits each attempt before the body runs, as in a worker.


def test_attempts_are_counted_and_a_job_is_parked_after_the_limit(transactional_db, settings):
    settings.JOB_MAX_ATTEMPTS = 3
    calls = []

    def body():
        calls.append(1)
        raise ValueError("boom")

    for attempt in range(1, 4):
        with pytest.raises(ValueError, match="boom"):
            services.run_job(key="k", func="f", kwargs={}, body=body)
        assert JobRun.objects.get(key="k").state == ("parked" if attempt == 3 else "pending")
    # django-q2 gives up after as many recorded failures; a later delivery would not run it
    assert services.run_job(key="k", func="f", kwargs={}, body=body).startswith("parked")
    run = JobRun.objects.get(key="k")
    assert run.attempts == 3
    assert "ValueError: boom" in run.last_error
    assert len(calls) == 3


def test_a_finished_job_is_not_run_again(transactional_db):
    calls = []

    def body() -> str:
        calls.append(1)
        return "ok"

    ok = services.run_job(key="k", func="f", kwargs={}, body=body)
    assert ok == "ok"
    assert services.run_job(key="k", func="f", kwargs={}, body=lambda: calls.append(1)) == (
        "already done")
    assert calls == [1]


def test_retry_parked_gives_fresh_attempts_and_enqueues_again(transactional_db, settings):
    settings.JOB_MAX_ATTEMPTS = 1
    with pytest.raises(ValueError, match="invalid literal"):
        services.run_job(key="email:1", func="users.tasks.send_welcome_email",
                         kwargs={"user_id": 1}, body=lambda: int("x"))
    run = JobRun.objects.get()
    assert run.state == RunState.PARKED
    assert services.retry_parked(runs=JobRun.objects.all()) == 1
    assert services.retry_parked(runs=JobRun.objects.all()) == 0, "a double submit: no-op"
    run.refresh_from_db()
    assert (run.state, run.attempts) == (RunState.PENDING, 0)
    (queued,) = queued_tasks()
    assert queued.func == "users.tasks.send_welcome_email"
    assert queued.kwargs == {"user_id": 1}


def test_run_job_refuses_to_run_inside_a_transaction(db):
    with pytest.raises(RuntimeError, match="must not run inside a transaction"):
        services.run_job(key="k", func="f", kwargs={}, body=lambda: None)


@pytest.mark.cluster
# The parking is the ledger's, whatever the broker; that the stock ORM broker redelivers a job
# whose worker died is shown on it by test_a_worker_killed_mid_email_job_is_redelivered...
@pytest.mark.any_broker
def test_a_job_that_kills_its_worker_every_time_is_parked_not_retried_forever(
    transactional_db, start_process
):
    # django-q2 never counts these attempts (docs/design.md); our ledger does.
    cluster = start_process("qcluster", ready="running.", JOB_MAX_ATTEMPTS="2")
    user = User.objects.create_user(username="poison")
    faults.arm(point="email.send", action="crash", times=None)
    async_task("users.tasks.send_welcome_email", user_id=user.pk)
    if uses_pgbroker():
        # The queue counts the attempts that killed their worker itself: after the second
        # death the job has had its two attempts and stays visible as parked.
        wait_until(Job.objects.parked().exists, timeout=30, interval=0.2,
                   message="the poison job to be parked:\n" + cluster.log()[-2000:])
        (job,) = Job.objects.all()
        assert job.attempts == 2
        assert "gave up after 2 attempts" in job.last_error
        assert "died (exit code 70) while running it" in job.last_error
        assert JobRun.objects.get().attempts == 2
    else:
        wait_until(lambda: JobRun.objects.filter(parked_at__isnull=False).exists(), timeout=90,
                   interval=0.5, message="the poison job to be parked:\n" + cluster.log()[-2000:])
        assert JobRun.objects.get().attempts == 3  # two crashes, the third delivery parks it
    wait_until(queue_drained, timeout=30, message="the parked job's ack")
    assert not EmailSend.objects.exists()


@pytest.mark.cluster
@pytest.mark.any_broker  # the ledger parks it, whatever the broker
def test_a_job_that_raises_every_time_is_parked_and_shows_as_a_lost_email(
    transactional_db, start_process
):
    # django-q2 drops a task after Q_MAX_ATTEMPTS recorded failures; our ledger must have
    # parked it by then, or it would vanish while still counted as "in flight".
    start_process("qcluster", ready="running.", JOB_MAX_ATTEMPTS="2")
    user = User.objects.create_user(username="unlucky", signup_mode="que")
    faults.arm(point="email.send", action="raise", times=None)
    async_task("users.tasks.send_welcome_email", user_id=user.pk)
    wait_until(queue_drained, timeout=60, interval=0.5,
               message="django-q2 to give up on the task")
    run = JobRun.objects.get()
    assert (run.state, run.attempts) == ("parked", 2)
    checks = {c.name: c for c in consistency_checks()}
    assert checks["reliable_signups_lost_email"].ids == ["unlucky"]
    assert checks["jobs_parked"].ids == [f"email:{user.pk}"]


@pytest.mark.beside_lab  # mostly waits: make test's second pass
@pytest.mark.cluster
def test_a_job_timed_out_by_django_q2_on_its_last_attempt_is_parked(
    transactional_db, start_process
):
    # django-q2 times a task out with TimeoutException, a SystemExit, not an Exception.
    start_process("qcluster", ready="running.", JOB_MAX_ATTEMPTS="1")
    user = User.objects.create_user(username="slow", signup_mode="que")
    faults.arm(point="email.send", action="delay", times=1, delay_ms=10_000)
    async_task("users.tasks.send_welcome_email", user_id=user.pk)  # Q_TIMEOUT is 3 s here
    wait_until(queue_drained, timeout=60, interval=0.5,
               message="django-q2 to give up on the timed-out task")
    run = JobRun.objects.get()
    assert run.state == "parked"
    assert "TimeoutException" in run.last_error
    assert not EmailSend.objects.exists()


def test_prune_deletes_only_old_task_results_and_keeps_failures(db, settings):
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Failure, Success, Task

    from retention import services as retention

    def task(name: str, age_days: int, success: bool = True) -> None:
        when = timezone.now() - timedelta(days=age_days)
        Task.objects.create(id=name, name=name, func="f", started=when, stopped=when,
                            success=success)

    settings.RETENTION_DAYS = {**settings.RETENTION_DAYS, "job_results": 7}
    task("old", 30)
    task("new", 1)
    task("old-failure", 30, success=False)  # failures are kept for a person to look at
    (outcome,) = retention.prune(only=["job_results"])
    assert outcome.deleted == 1
    assert list(Success.objects.values_list("name", flat=True)) == ["new"]
    assert Failure.objects.count() == 1
