from dataclasses import dataclass

from django.db.models import Count, Min, Q
from django.utils import timezone

from outbox.models import WAITING_PREFIX, OutboxMessage


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    published: int
    dead: int
    oldest_pending_seconds: float | None
    waiting: int = 0  # pending because their store (Redis) is down


def outbox_counts() -> OutboxCounts:
    pending_q = Q(published_at__isnull=True, dead_at__isnull=True)
    agg = OutboxMessage.objects.aggregate(
        pending=Count("id", filter=pending_q),
        waiting=Count("id", filter=pending_q & Q(last_error__startswith=WAITING_PREFIX)),
        published=Count("id", filter=Q(published_at__isnull=False)),
        dead=Count("id", filter=Q(dead_at__isnull=False, published_at__isnull=True)),
        oldest=Min("created_at", filter=pending_q),
    )
    oldest = agg["oldest"]
    return OutboxCounts(
        pending=agg["pending"], published=agg["published"], dead=agg["dead"],
        waiting=agg["waiting"],
        oldest_pending_seconds=(timezone.now() - oldest).total_seconds() if oldest else None,
    )
