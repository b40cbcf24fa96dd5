from dataclasses import dataclass

from django.db.models import Count, Min, Q
from django.utils import timezone

from outbox.models import WAITING_PREFIX, OutboxMessage


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    dead: int
    oldest_pending_seconds: float | None
    waiting: int = 0  # pending because their store (Redis) is down


def outbox_counts() -> OutboxCounts:
    """Pending and dead from their partial indexes (what is waiting, however old the table).
    How many were ever published, pruned or not, is a tally (PUBLISHED_TALLY, kept by a
    trigger), read where the tallies are: the dashboard, which sits above the outbox."""
    pending = OutboxMessage.objects.pending().aggregate(
        n=Count("id"), waiting=Count("id", filter=Q(last_error__startswith=WAITING_PREFIX)),
        oldest=Min("created_at"))
    oldest = pending["oldest"]
    return OutboxCounts(
        pending=pending["n"], dead=OutboxMessage.objects.dead().count(),
        waiting=pending["waiting"],
        oldest_pending_seconds=(timezone.now() - oldest).total_seconds() if oldest else None,
    )
