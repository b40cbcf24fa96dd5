from dataclasses import dataclass

from django.db.models import Count, Min, Q
from django.utils import timezone

from outbox.models import PUBLISHED_TALLY, WAITING_PREFIX, OutboxMessage


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    published: int
    dead: int
    oldest_pending_seconds: float | None
    waiting: int = 0  # pending because their store (Redis) is down


def outbox_counts() -> OutboxCounts:
    """Pending and dead from their partial indexes (what is waiting, however old the table);
    published from its tally (every message ever published, pruned or not)."""
    from dashboard import tallies

    pending = OutboxMessage.objects.pending().aggregate(
        n=Count("id"), waiting=Count("id", filter=Q(last_error__startswith=WAITING_PREFIX)),
        oldest=Min("created_at"))
    oldest = pending["oldest"]
    return OutboxCounts(
        pending=pending["n"], published=tallies.totals(PUBLISHED_TALLY).get(PUBLISHED_TALLY, 0),
        dead=OutboxMessage.objects.dead().count(), waiting=pending["waiting"],
        oldest_pending_seconds=(timezone.now() - oldest).total_seconds() if oldest else None,
    )
