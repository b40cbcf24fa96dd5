"""What the signups look like: per mode, who got their welcome email, who is still waiting,
who lost it. Read by the dashboard (users/dashboard.py), `show_state` and `create_user`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, Q

from common.db import db_now
from jobs.selectors import queue_counts, queued_calls, redis_status
from outbox.models import STATE_CONDITIONS, MessageState, OutboxMessage
from outbox.selectors import outbox_counts
from users.models import Mode, User
from users.services import EMAIL_STORE, SEND_EMAIL_TASK, WELCOME_TOPIC

# A published message's job normally runs within milliseconds; one still not done after this
# long was lost by its store (Redis), and reconciliation will publish it again.
PUBLISHED_GRACE_SECONDS = 5


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
        return email_store_name(self.mode)


def email_store_name(mode: str) -> str:
    """Where this mode's email jobs go: "PostgreSQL" or "Redis"."""
    return EMAIL_STORE[Mode(mode)].label.split(" (")[0]


def users_with_email_job(*, include_parked: bool = False) -> set[int]:
    """Users with a welcome email job waiting in either store."""
    return {kw.get("user_id") for kw in queued_calls(SEND_EMAIL_TASK,
                                                     include_parked=include_parked)}


def welcome_messages():
    return OutboxMessage.objects.filter(topic=WELCOME_TOPIC)


def users_with_pending_email() -> set[int]:
    """Users whose welcome email is still on its way: a job still in a queue (waiting,
    running, or between attempts) or a pending (or just published) outbox message. A job the
    queue gave up on (parked) is not on its way: a person has to retry it."""
    ids = users_with_email_job()
    recent = db_now() - timedelta(seconds=PUBLISHED_GRACE_SECONDS)
    messages = welcome_messages().filter(
        STATE_CONDITIONS[MessageState.PENDING] | Q(published_at__gte=recent))
    for payload in messages.values_list("payload", flat=True):
        if isinstance(payload, dict):
            ids.add(payload.get("user_id"))
    return ids


def users_published_long_ago() -> set[int]:
    """Users whose welcome message was published more than the grace ago."""
    cutoff = db_now() - timedelta(seconds=PUBLISHED_GRACE_SECONDS)
    return {p.get("user_id") for p in welcome_messages().filter(published_at__lt=cutoff)
            .values_list("payload", flat=True) if isinstance(p, dict)}


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


def system_state() -> dict:
    """The talk's `make db-show`: users and their emails, the outbox, the queue."""
    users = (
        User.objects.exclude(signup_mode="")
        .annotate(emails=Count("email_sends"))
        .order_by("date_joined", "id")
    )
    outbox = outbox_counts()
    queue = queue_counts()
    redis = redis_status()
    return {
        "users": [{"name": u.username, "mode": u.signup_mode, "emails": u.emails} for u in users],
        "outbox": {"pending": outbox.pending, "published": outbox.published, "dead": outbox.dead},
        "queue": {"queued": queue.queued, "failed": queue.failed},
        "redis": {"up": redis.up, "queued": redis.depth, "workers": redis.workers},
    }
