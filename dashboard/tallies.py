"""Counters kept in the same transaction as what they count (dashboard.models.Tally).

    with transaction.atomic():
        user = User.objects.create_user(...)
        tallies.add(f"users.{mode}")

`totals("users.")` then costs a sum over a few rows, not a count over a year of users, and
inside a `common.db.snapshot()` it agrees with the rows it counts."""

from __future__ import annotations

from django.db import connection
from django.db.models import Sum

from dashboard.models import Tally


def add(name: str, delta: int = 1) -> None:
    Tally.objects.create(name=name, delta=delta)


def totals(prefix: str) -> dict[str, int]:
    """Every counter whose name starts with `prefix`, by name."""
    rows = (Tally.objects.filter(name__startswith=prefix).values("name")
            .annotate(n=Sum("delta")).values_list("name", "n"))
    return {name: int(n) for name, n in rows}


def fold() -> int:
    """Fold the change rows into one row per counter; returns how many rows went. One
    statement: a reader sees the totals before or after it, never between. A change committed
    later with a lower id is folded next time."""
    with connection.cursor() as cur:
        cur.execute("SELECT max(id), count(*) FROM dashboard_tally")
        top, rows = cur.fetchone()
        if top is None or rows <= len(Tally.objects.values("name").distinct()):
            return 0
        cur.execute(
            """
            WITH gone AS (DELETE FROM dashboard_tally WHERE id <= %s RETURNING name, delta)
            INSERT INTO dashboard_tally (name, delta)
            SELECT name, sum(delta) FROM gone GROUP BY name
            """, [top])
        return rows
