"""How big each table that grows with traffic is, and what the last prune did (the dashboard's
History panel)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from common.db import estimated_rows
from retention import registry
from retention.models import Pruned
from retention.services import window


@dataclass(frozen=True)
class TableSize:
    rule: str
    label: str
    days: int
    rows: int                     # the table's rows, estimated by PostgreSQL's statistics
    oldest: datetime | None       # the oldest row the rule may prune (by its age field)
    pruned: Pruned | None


def sizes() -> list[TableSize]:
    last = {p.rule: p for p in Pruned.objects.all()}
    found = []
    for rule in registry.rules():
        if rule.size:
            rows, oldest = rule.size()
        else:
            qs = rule.rows()
            rows = estimated_rows(qs.model._meta.db_table)
            oldest = (qs.exclude(**{f"{rule.age_field}__isnull": True})
                      .order_by(rule.age_field).values_list(rule.age_field, flat=True).first())
        found.append(TableSize(rule.name, rule.label, window(rule), rows, oldest,
                               last.get(rule.name)))
    return found
