from dataclasses import dataclass

from django.db.models import Count, Min, Q
from django.utils import timezone

from outbox.models import STATE_CONDITIONS, WAITING_PREFIX, MessageState, OutboxMessage


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    published: int
    dead: int
    oldest_pending_seconds: float | None
    waiting: int = 0  # pending because their store (Redis) is down


def outbox_counts() -> OutboxCounts:
    pending_q = STATE_CONDITIONS[MessageState.PENDING]
    agg = OutboxMessage.objects.aggregate(
        **{state: Count("id", filter=q) for state, q in STATE_CONDITIONS.items()},
        waiting=Count("id", filter=pending_q & Q(last_error__startswith=WAITING_PREFIX)),
        oldest=Min("created_at", filter=pending_q),
    )
    oldest = agg["oldest"]
    return OutboxCounts(
        pending=agg["pending"], published=agg["published"], dead=agg["dead"],
        waiting=agg["waiting"],
        oldest_pending_seconds=(timezone.now() - oldest).total_seconds() if oldest else None,
    )
