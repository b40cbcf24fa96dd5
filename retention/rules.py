"""The rules for what no app owns: Django's sessions and the mail backend's files."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.contrib.sessions.models import Session
from django.utils import timezone

from retention import registry


def _sessions():
    return Session.objects.all()


def mail_files() -> list[Path]:
    """The file mail backend's messages (EMAIL_FILE_PATH), when that is the backend."""
    if settings.EMAIL_BACKEND != "django.core.mail.backends.filebased.EmailBackend":
        return []
    folder = Path(settings.EMAIL_FILE_PATH)
    return sorted(folder.glob("*.log")) if folder.is_dir() else []


def _delete_mail_files(cutoff: datetime, batch: int) -> int:
    gone = 0
    for path in mail_files():
        if gone >= batch:
            break
        try:
            if path.stat().st_mtime < cutoff.timestamp():
                path.unlink()
                gone += 1
        except FileNotFoundError:
            continue
    return gone


def _mail_size() -> tuple[int, datetime | None]:
    files = mail_files()
    if not files:
        return 0, None
    oldest = min(p.stat().st_mtime for p in files)
    return len(files), datetime.fromtimestamp(oldest, tz=timezone.get_current_timezone())


def register_builtin() -> None:
    registry.register(registry.Rule(
        name="sessions", label="sessions (dated by their expiry)", days="sessions",
        queryset=_sessions, age_field="expire_date", order=900))
    registry.register(registry.Rule(
        name="mail_files", label="mail files", days="mail_files", delete=_delete_mail_files,
        size=_mail_size, order=910))
