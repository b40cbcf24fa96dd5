"""How big each table that grows with traffic is, and what the last prune did (the dashboard's
History panel)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection

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


def estimated_rows(table: str) -> int:
    """pg_class.reltuples: what ANALYZE (autovacuum) last counted, free to read. Before the
    first ANALYZE (-1): counted, the table is young."""
    with connection.cursor() as cur:
        cur.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                    [table])
        row = cur.fetchone()
        if row is None:
            return 0
        if row[0] >= 0:
            return int(row[0])
        cur.execute(f'SELECT count(*) FROM "{table}"')  # noqa: S608 (a table name we own)
        return cur.fetchone()[0]


def sizes() -> list[TableSize]:
    last = {p.rule: p for p in Pruned.objects.all()}
    found = []
    for rule in registry.rules():
        if rule.size:
            rows, oldest = rule.size()
        else:
            qs = rule.queryset()
            rows = estimated_rows(qs.model._meta.db_table)
            oldest = (qs.exclude(**{f"{rule.age_field}__isnull": True})
                      .order_by(rule.age_field).values_list(rule.age_field, flat=True).first())
        found.append(TableSize(rule.name, rule.label, window(rule), rows, oldest,
                               last.get(rule.name)))
    return found
