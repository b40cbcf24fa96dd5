"""`manage.py check` for the retention windows: an idempotency ledger kept shorter than the
redelivery horizon would let a duplicate run twice."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register

E010 = "reliable.E010"
LEDGERS = ("email_ledger", "job_runs", "outbox_published", "sagas_finished")


@register(Tags.compatibility)
def check_retention(app_configs=None, **kwargs) -> list:
    horizon = settings.REDELIVERY_HORIZON_DAYS
    days = settings.RETENTION_DAYS
    return [Error(f"RETENTION_DAYS[{name!r}] is {days[name]} days, below the redelivery "
                  f"horizon of {horizon} days: a duplicate of a job arriving after its key "
                  "was pruned would run twice.",
                  hint=f"Keep it at least {horizon} days (docs/retention.md).", id=E010)
            for name in LEDGERS if days.get(name, horizon) < horizon]
