"""`manage.py check` for django-q2 settings that break transactional enqueue or delivery.

Each finding names what goes wrong in production and how to fix it (the hint)."""

from __future__ import annotations

import math
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
from django.db import DEFAULT_DB_ALIAS

W001 = "reliable.W001"
W002 = "reliable.W002"
W004 = "reliable.W004"
W101 = "pgbroker.W101"


def _cluster() -> dict[str, Any]:
    return getattr(settings, "Q_CLUSTER", {}) or {}


@register(Tags.compatibility, deploy=False)
def check_queue_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    q = _cluster()
    found: list[CheckMessage] = []
    alias = q.get("orm")
    if alias and alias != DEFAULT_DB_ALIAS:
        found.append(Warning(
            f"Q_CLUSTER['orm'] is {alias!r}, not the alias the business tables use "
            f"({DEFAULT_DB_ALIAS!r}): async_task() inside transaction.atomic() then runs on "
            "another connection, closes the caller's and commits an orphan task "
            "(django-q2 #293).",
            hint=f"Set Q_CLUSTER['orm'] = {DEFAULT_DB_ALIAS!r}, the alias your atomic() "
                 "blocks use, so the job row commits or rolls back with them.",
            id=W001))
    if alias and not q.get("broker_class"):
        workers = max(int(q.get("workers") or 1), 1)
        timeout = q.get("timeout")
        queue_limit = q.get("queue_limit", workers ** 2) or 0
        bulk = q.get("bulk", 1) or 1
        retry = q.get("retry", 60)
        if timeout:
            needed = (math.ceil((queue_limit + bulk) / workers) + 1) * timeout + timeout
            if retry < needed:
                found.append(Warning(
                    f"Q_CLUSTER['retry'] ({retry} s) is shorter than the worst wait of a "
                    f"leased task with the ORM broker: {needed} s for {queue_limit} "
                    f"prefetched + {bulk} bulk over {workers} workers, each up to the "
                    f"timeout of {timeout} s. Tasks still waiting or running are handed out "
                    "again (duplicates).",
                    hint=f"Set retry >= {needed} (or lower queue_limit/bulk), or use the "
                         "PostgreSQL broker (Q_BROKER=postgres), which has no lease.",
                    id=W002))
    db_alias = alias or DEFAULT_DB_ALIAS
    database = settings.DATABASES.get(db_alias, {})
    if database.get("CONN_MAX_AGE", 0) == 0:
        found.append(Warning(
            f"DATABASES[{db_alias!r}]['CONN_MAX_AGE'] is 0: django-q2 closes and reopens the "
            "connection several times per task (about 5 new sessions per task measured).",
            hint="Set CONN_MAX_AGE to 60 (CONN_MAX_AGE=60 in the environment here) or use a "
                 "connection pool.",
            id=W004))
    return found


@register(Tags.compatibility)
def check_app_order(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """`manage.py qcluster` is the first installed app's: pgbroker's only before django_q.
    django-q2's own cluster cannot consume pgbroker's queue (its dequeue() refuses). A
    warning: a project may run both clusters on purpose (and silence it)."""
    names = [config.name for config in apps.get_app_configs()]
    if "django_q" in names and names.index("pgbroker") > names.index("django_q"):
        return [Warning(
            "pgbroker comes after django_q in INSTALLED_APPS, so `manage.py qcluster` starts "
            "django-q2's own cluster, which cannot take jobs from pgbroker's queue.",
            hint='List "pgbroker" before "django_q" in INSTALLED_APPS.', id=W101)]
    return []
