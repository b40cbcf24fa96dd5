"""`manage.py check` for this project's queue settings (Q_BROKER, JOB_MAX_ATTEMPTS)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

E001 = "reliable.E001"
W003 = "reliable.W003"


@register(Tags.compatibility)
def check_job_settings(app_configs=None, **kwargs) -> list:
    found: list = []
    broker = getattr(settings, "Q_BROKER", "postgres")
    known = getattr(settings, "BROKER_CLASSES", {})
    if broker not in known:
        found.append(Error(
            f"Q_BROKER={broker!r} is not a broker this project knows.",
            hint=f"Use one of: {', '.join(known)} (postgres: this project's broker; orm: "
                 "django-q2's stock ORM broker).",
            id=E001))
    q_max = (getattr(settings, "Q_CLUSTER", {}) or {}).get("max_attempts", 0)
    job_max = getattr(settings, "JOB_MAX_ATTEMPTS", 5)
    if 0 < q_max < job_max:
        found.append(Warning(
            f"Q_MAX_ATTEMPTS ({q_max}) is below JOB_MAX_ATTEMPTS ({job_max}): the queue gives "
            "up on a failing job before jobs.JobRun parks it, so it vanishes while the "
            "ledger still counts it as pending.",
            hint="Leave Q_MAX_ATTEMPTS unset (it follows JOB_MAX_ATTEMPTS) or raise it.",
            id=W003))
    return found
