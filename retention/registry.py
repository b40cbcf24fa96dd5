"""What grows with traffic, and how long it is kept: each app registers its rules.

    from retention import registry

    registry.register(registry.Rule(
        name="outbox_published", label="published outbox messages",
        queryset=lambda: OutboxMessage.objects.published(), age_field="published_at",
        days="outbox_published"))        # a key of settings.RETENTION_DAYS

`manage.py prune` (and the "prune" schedule) deletes, for each rule, the rows whose
`age_field` is older than the window, oldest first, `PRUNE_BATCH` rows per transaction by
primary key, so no lock is held for long and a stopped prune loses nothing. A rule with
`delete` does its own deleting (a saga with its log and bookings; files); `keep` leaves out
rows a guarantee still needs (a ledger key whose job is still queued).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Model, QuerySet


@dataclass(frozen=True)
class Rule:
    name: str
    label: str                      # what the rows are, plural ("published outbox messages")
    days: str                       # its window: a key of settings.RETENTION_DAYS
    queryset: Callable[[], QuerySet] | None = None  # the rows that may go, once old enough
    age_field: str = ""             # when a row finished (published, ran, ended)
    # rows among the old ones that must stay (a guarantee needs them): filtered out
    keep: Callable[[QuerySet], QuerySet] | None = None
    # a rule that deletes for itself: delete(cutoff, batch) -> rows deleted (0: done)
    delete: Callable[[datetime, int], int] | None = None
    # (rows, oldest) for the dashboard, when the table is not the queryset's model
    size: Callable[[], tuple[int, datetime | None]] | None = None
    order: int = 100

    @property
    def model(self) -> type[Model] | None:
        return self.queryset().model if self.queryset else None

    def rows(self) -> QuerySet:
        """The rows that may go once old enough: a rule without `delete` has a queryset."""
        if self.queryset is None:
            raise LookupError(f"the retention rule {self.name} has no queryset")
        return self.queryset()


_rules: dict[str, Rule] = {}


def register(rule: Rule) -> None:
    _rules[rule.name] = rule


def rules() -> list[Rule]:
    return sorted(_rules.values(), key=lambda r: (r.order, r.name))


def rule(name: str) -> Rule | None:
    return _rules.get(name)
