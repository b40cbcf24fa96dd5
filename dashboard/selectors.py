"""What the dashboard and `check_consistency` read: the state of every mechanism, and the
invariants of docs/design.md checked against it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.db.models import Count, Q
from django.utils import timezone

from faults.selectors import armed_faults
from jobs.models import JobRun
from jobs.selectors import queue_counts, queued_tasks, redis_queued_tasks, redis_status
from outbox.models import OutboxMessage
from outbox.selectors import outbox_counts
from sagas.models import ACTIVE_STATES, Saga, State
from travel.models import FlightBooking
from travel.services import MODELS
from users.models import Mode, User
from users.services import EMAIL_STORE, SEND_EMAIL_TASK, WELCOME_TOPIC

OK, EXPECTED, ATTENTION, VIOLATION = "ok", "expected", "attention", "violation"


@dataclass
class Check:
    name: str
    description: str
    status: str
    count: int = 0
    ids: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModeStats:
    mode: str
    users: int = 0
    emails: int = 0
    lost: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    lost_by_store: list[str] = field(default_factory=list)  # published, then a store lost it

    @property
    def store(self) -> str:
        """Where this mode's email jobs go."""
        return EMAIL_STORE[Mode(self.mode)].label.split(" (")[0]


# A published message's job normally runs within milliseconds; one still not done after this
# long was lost by its store (Redis), and reconciliation will publish it again.
PUBLISHED_GRACE_SECONDS = 5


def users_with_pending_email() -> set[int]:
    """Users whose welcome email is still on its way: a job still in the queue (waiting,
    running, or between attempts) or a pending outbox message. A job the queue gave up on
    (parked) is not on its way: a person has to retry it."""
    ids: set[int] = set()
    for task in [*queued_tasks(), *redis_queued_tasks()]:
        if task.func == SEND_EMAIL_TASK:
            ids.add(task.kwargs.get("user_id"))
    recent = timezone.now() - timedelta(seconds=PUBLISHED_GRACE_SECONDS)
    messages = OutboxMessage.objects.filter(topic=WELCOME_TOPIC).filter(
        Q(published_at__isnull=True, dead_at__isnull=True) | Q(published_at__gte=recent))
    for payload in messages.values_list("payload", flat=True):
        if isinstance(payload, dict):
            ids.add(payload.get("user_id"))
    return ids


def users_published_long_ago() -> set[int]:
    """Users whose welcome message was published more than the grace ago."""
    cutoff = timezone.now() - timedelta(seconds=PUBLISHED_GRACE_SECONDS)
    return {p.get("user_id") for p in OutboxMessage.objects.filter(
        topic=WELCOME_TOPIC, published_at__lt=cutoff).values_list("payload", flat=True)
        if isinstance(p, dict)}


def signup_stats() -> list[ModeStats]:
    stats = {m: ModeStats(mode=m) for m in Mode.values}
    pending = users_with_pending_email()
    published = users_published_long_ago()
    users = User.objects.exclude(signup_mode="").annotate(n=Count("email_sends")).order_by("id")
    for user in users:
        s = stats[user.signup_mode]
        s.users += 1
        s.emails += user.n
        if user.n > 1:
            s.duplicated.append(user.username)
        elif user.n == 0:
            if user.pk in pending:
                s.in_flight.append(user.username)
            elif user.pk in published and user.signup_mode != Mode.DUAL_WRITE:
                s.lost_by_store.append(user.username)
            else:
                s.lost.append(user.username)
    return list(stats.values())


def saga_stats() -> dict:
    counts = dict(Saga.objects.values_list("state").annotate(n=Count("id")))
    return {state: counts.get(state, 0) for state in State.values}


def overdue_sagas(grace_seconds: float = 5) -> list[int]:
    cutoff = timezone.now() - timedelta(seconds=grace_seconds)
    return list(Saga.objects.filter(state__in=ACTIVE_STATES, lease_until__lt=cutoff)
                .values_list("id", flat=True))


def saga_booking_violations() -> tuple[list[int], list[int]]:
    """(compensated sagas with a booking still active, completed sagas missing a booking)."""
    booked: dict[int, set[str]] = {}
    for service, model in MODELS.items():
        for saga_id in model.objects.filter(status="booked").values_list("saga_id", flat=True):
            booked.setdefault(saga_id, set()).add(service)
    compensated = Saga.objects.filter(state=State.COMPENSATED).values_list("id", flat=True)
    completed = Saga.objects.filter(state=State.COMPLETED).values_list("id", flat=True)
    active_after_compensation = [i for i in compensated if booked.get(i)]
    incomplete = [i for i in completed if booked.get(i, set()) != set(MODELS)]
    return active_after_compensation, incomplete


def recent_sagas(limit: int = 10) -> list[Saga]:
    return list(Saga.objects.order_by("-id")[:limit])


def consistency_checks(signups: list[ModeStats] | None = None) -> list[Check]:
    """Every invariant of docs/design.md, as a list of checks. A "violation" means a promise broke;
    "expected" is the dual-write anomaly the product exists to show; "attention" means a person
    should look (dead messages, parked jobs, stuck or overdue sagas), nothing is lost."""
    signups = signup_stats() if signups is None else signups
    lost_reliable = [n for s in signups if s.mode != Mode.DUAL_WRITE for n in s.lost]
    lost_dual = [n for s in signups if s.mode == Mode.DUAL_WRITE for n in s.lost]
    duplicated = [n for s in signups for n in s.duplicated]
    lost_by_store = [n for s in signups for n in s.lost_by_store]
    parked = list(JobRun.objects.filter(parked_at__isnull=False, finished_at__isnull=True)
                  .values_list("key", flat=True))
    queue_parked = [f"{t.id} {t.func}" for t in queued_tasks(include_parked=True) if t.parked]
    dead = [str(i) for i in OutboxMessage.objects.filter(
        dead_at__isnull=False, published_at__isnull=True).values_list("id", flat=True)]
    still_booked, incomplete = saga_booking_violations()
    stuck = list(Saga.objects.filter(state=State.STUCK).values_list("id", flat=True))
    booked_twice = list(FlightBooking.objects.filter(times_booked__gt=1)
                        .values_list("saga_id", flat=True))
    overdue = overdue_sagas()

    def check(name, description, ids, bad):
        return Check(name, description, bad if ids else OK, len(ids), ids)

    return [
        check("reliable_signups_lost_email",
              "outbox and que: every committed user gets exactly one welcome email",
              lost_reliable, VIOLATION),
        check("emails_duplicated", "no user gets more than one welcome email",
              duplicated, VIOLATION),
        check("dual_write_lost_email",
              "dual-write: users whose welcome email was lost (the talk's anomaly)",
              lost_dual, EXPECTED),
        check("outbox_lost_by_store",
              "outbox: published, then lost by Redis (reconcile publishes it again)",
              lost_by_store, ATTENTION),
        check("outbox_dead", "outbox: dead messages (kept with their error, retryable)",
              dead, ATTENTION),
        check("jobs_parked", "jobs parked after too many attempts (poison jobs)",
              parked, ATTENTION),
        check("queue_parked", "jobs the queue gave up on (retry them from the Jobs page)",
              queue_parked, ATTENTION),
        check("saga_compensated_but_booked",
              "compensated sagas must leave nothing booked", still_booked, VIOLATION),
        check("saga_completed_but_not_booked",
              "completed sagas have every step booked", incomplete, VIOLATION),
        check("flights_booked_twice",
              "a flight is booked at most once (the flight service is not idempotent)",
              booked_twice, VIOLATION),
        check("saga_stuck", "sagas whose compensation keeps failing (retry them)",
              stuck, ATTENTION),
        check("saga_overdue", "unfinished sagas past their lease (recovery will resume them)",
              overdue, ATTENTION),
    ]


def violations(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == VIOLATION]


def dashboard_state() -> dict:
    signups = signup_stats()
    checks = consistency_checks(signups)
    return {
        "signups": signups,
        "outbox": outbox_counts(),
        "queue": queue_counts(),
        "redis": redis_status(),
        "sagas": saga_stats(),
        "recent_sagas": recent_sagas(),
        "faults": armed_faults(),
        "checks": checks,
        "violations": violations(checks),
    }
