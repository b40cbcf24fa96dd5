"""Pruning: each rule's rows older than its window, in small batches (retention.registry)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from common.db import db_now
from retention import registry
from retention.models import Pruned

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    rule: str
    label: str
    days: int
    deleted: int = 0
    seconds: float = 0.0
    complete: bool = True  # false: stopped at the time budget, more to do next time

    @property
    def rate(self) -> float:
        return self.deleted / self.seconds if self.seconds else 0.0


ANALYZE_AFTER = 10_000  # rows deleted: PostgreSQL's statistics (estimated counts) refreshed


def analyze(table: str) -> None:
    """Refresh the statistics the admin's estimated counts read, after a big prune (else its
    last pages would be past the end until autovacuum's next ANALYZE)."""
    with connection.cursor() as cur:
        cur.execute(f'ANALYZE "{table}"')  # noqa: S608 (a model's own table)


def window(rule: registry.Rule) -> int:
    return settings.RETENTION_DAYS[rule.days]


def old_rows(rule: registry.Rule, cutoff) -> QuerySet:
    rows = rule.rows().filter(**{f"{rule.age_field}__lt": cutoff})
    return rule.keep(rows) if rule.keep else rows


def delete_batch(rule: registry.Rule, cutoff, batch: int) -> int:
    """One transaction: the `batch` oldest rows of the rule that may go, by primary key."""
    if rule.delete:
        return rule.delete(cutoff, batch)
    model = rule.rows().model
    with transaction.atomic():
        ids = old_rows(rule, cutoff).order_by(rule.age_field).values("pk")[:batch]
        deleted, _ = model._default_manager.filter(pk__in=ids).delete()
    return deleted


def prune_rule(rule: registry.Rule, *, batch: int | None = None, budget: float | None = None,
               progress: Callable[[Outcome], None] | None = None) -> Outcome:
    """Delete what `rule` no longer keeps; stop after `budget` seconds (None: when done)."""
    batch = batch or settings.PRUNE_BATCH
    days = window(rule)
    cutoff = db_now() - timedelta(days=days)
    outcome = Outcome(rule=rule.name, label=rule.label, days=days)
    started = time.monotonic()
    while True:
        n = delete_batch(rule, cutoff, batch)
        outcome.deleted += n
        outcome.seconds = time.monotonic() - started
        if n and progress:
            progress(outcome)
        if n == 0 or (rule.delete is None and n < batch):  # a rule's own batches may be smaller
            break
        if budget is not None and outcome.seconds >= budget:
            outcome.complete = False
            break
    Pruned.objects.update_or_create(rule=rule.name, defaults={
        "finished_at": timezone.now(), "deleted": outcome.deleted,
        "seconds": round(outcome.seconds, 3), "complete": outcome.complete})
    if outcome.deleted:
        logger.info("pruned %d %s older than %d days in %.1f s", outcome.deleted, rule.label,
                    days, outcome.seconds)
    return outcome


def prune(*, only: list[str] | None = None, batch: int | None = None,
          budget: float | None = None,
          progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Every rule (or the ones named). `budget`: seconds for the whole pass, shared by the
    rules in turn (the schedule's pass must end well within its task timeout); what is left
    waits for the next pass."""
    started = time.monotonic()
    outcomes = []
    for rule in registry.rules():
        if only and rule.name not in only:
            continue
        left = None if budget is None else budget - (time.monotonic() - started)
        if left is not None and left <= 0:  # spent: this rule waits for the next pass
            outcomes.append(Outcome(rule=rule.name, label=rule.label, days=window(rule),
                                    complete=False))
            continue
        outcome = prune_rule(rule, batch=batch, budget=left, progress=progress)
        if outcome.deleted >= ANALYZE_AFTER and rule.model is not None:
            analyze(rule.model._meta.db_table)
        outcomes.append(outcome)
    return outcomes
