from django.db.models import Count

from jobs.selectors import queue_counts, redis_status
from outbox.selectors import outbox_counts
from users.models import User


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
