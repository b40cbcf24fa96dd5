"""Is it alive, is it ready? For the web process (its own database connection, answered over
HTTP by ops.middleware) and for the long-running programs (their status files,
pgbroker.status, read by `manage.py health`).

The web is ready when the database answers a `SELECT 1` on its own connection within
READY_TIMEOUT_MS: every page needs the database. Redis is not asked: the pages work without
it (the dashboard shows Redis down, the outbox keeps what cannot be delivered yet), and taking
every web process out of rotation when Redis is down would hide the very page that says so."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from ops import programs
from pgbroker.status import Verdict, one_line, verdict

logger = logging.getLogger(__name__)
READY_TIMEOUT_MS = 2000  # the ready check's statement; a new connection: libpq's connect_timeout


@dataclass
class _Down:
    since: float | None = None  # monotonic: the first failed check of this outage


_down = _Down()


def web_unready() -> str:
    """Why this web process cannot serve pages now ("" when it can): the database on its own
    connection (the one its requests use), within READY_TIMEOUT_MS."""
    try:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute(f"SET LOCAL statement_timeout = {READY_TIMEOUT_MS}")
            cur.execute("SELECT 1")
    except DatabaseError as e:
        connection.close()  # the next request (or check) connects anew
        now = time.monotonic()
        if _down.since is None:
            _down.since = now
            logger.error("not ready: the database does not answer: %s", one_line(str(e)))
        # the error's class only: this answer needs no login, its text may name hosts
        return f"no database for {now - _down.since:.0f} s ({type(e).__name__})"
    if _down.since is not None:
        logger.warning("ready again: the database answers after %.1f s",
                       time.monotonic() - _down.since)
        _down.since = None
    return ""


class UnknownProgram(ValueError):
    pass


def program_verdict(program: str, *, stale: float) -> Verdict:
    """What the program's status file says (STATUS_DIR/<program>.json)."""
    if program not in programs.names():
        raise UnknownProgram(program)
    return verdict(programs.status_file(settings.STATUS_DIR, program), stale=stale)
