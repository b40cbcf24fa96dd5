"""How this package connects to PostgreSQL: Django's settings for an alias, with timeouts on
both sides of the connection (pgbroker.timing), and how to tell a server with no connection
slot left from any other failure."""

from __future__ import annotations

import socket
from typing import Any

from django.conf import settings
from django.db import connections

from pgbroker.timing import Timing, with_options

# What PostgreSQL says when it has no connection slot for a new session (SQLSTATE 53300):
# beyond max_connections, past a role's or a database's CONNECTION LIMIT, or into the slots
# reserved for superusers. A connection refused so never ran anything.
NO_SLOT = ("too many clients already", "too many connections for",
           "remaining connection slots are reserved")


class NoSlot(Exception):
    """A worker could not open its key session: PostgreSQL has no connection slot."""


def no_slot(error: BaseException | str | None) -> bool:
    """Was `error` (or the text of one: a job's traceback) PostgreSQL refusing a new
    connection for want of a slot? A refused connection carries no SQLSTATE in libpq, so its
    message is read: PostgreSQL's English messages (lc_messages C or en, as initdb's
    --locale=C and most servers have it)."""
    if isinstance(error, BaseException):
        causes = [error, error.__cause__]
        if any(getattr(e, "sqlstate", None) == "53300" for e in causes if e is not None):
            return True
    text = str(error or "")
    return any(marker in text for marker in NO_SLOT)


def timing() -> Timing:
    """The timeouts of both sides of a connection (settings.PGBROKER_TIMING, pgbroker.timing)."""
    return getattr(settings, "PGBROKER_TIMING", None) or Timing()


def host_name() -> str:
    """This machine's name in the clusters' table and the logs: settings.HOST_NAME (the lab's
    hosts share one kernel, so one hostname), else the hostname."""
    return getattr(settings, "HOST_NAME", "") or socket.gethostname()


def connection_params(alias: str) -> dict[str, Any]:
    """psycopg keyword arguments for `alias` as Django would connect (OPTIONS included),
    with a connect timeout, and timeouts on both sides so a vanished peer is noticed in
    seconds (pgbroker.timing), unless Django's OPTIONS set them already."""
    params: dict[str, Any] = connections[alias].get_connection_params()
    # application_name: each caller names its own connection ("pgbroker worker", "side")
    for key in ("cursor_factory", "context", "prepare_threshold", "application_name"):
        params.pop(key, None)
    if "tcp_user_timeout" not in params:
        params = with_options(params, timing())
    return params
