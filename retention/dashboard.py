"""The History panel: each table that grows with traffic, its size, oldest row, window and
last prune; and the Prune now control."""

from __future__ import annotations

from dashboard import registry
from jobs.cluster import run_now
from retention.selectors import sizes


def register() -> None:
    registry.register_panel(registry.Panel(
        name="history", template="admin/retention/dashboard_history.html", wide=True,
        order=95, context=lambda snap: {"tables": sizes()}))
    registry.register_control(registry.Control(
        name="prune", title="", button="Prune now", order=90,
        help="delete what is older than its window (settings RETENTION_DAYS), in small "
             "batches; the schedule does it every 10 minutes",
        run=lambda data: run_now("retention.tasks.prune", "Pruned")))


