"""A second, autocommit connection to the default database, one per process and thread.

Statements on it commit on their own, whatever transaction Django's own connection is in.
It follows the default alias's settings at connect time, so under pytest-django it reaches
the test database.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Iterator

import psycopg

from common.db import connection_params, open_autocommit

_local = threading.local()
_opened: list[tuple[int, psycopg.Connection]] = []  # every thread's, for close_all()
_opened_lock = threading.Lock()


def _gone(conn: psycopg.Connection) -> bool:
    """Did the server speak while we were not asking? An idle connection that is readable
    got its termination notice or end of file (a restart, pg_terminate_backend): without this
    check its next statement would fail, once, before anyone noticed."""
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _connection() -> psycopg.Connection:
    params = connection_params()
    key = (os.getpid(), tuple(sorted((k, str(v)) for k, v in params.items())))
    conn = getattr(_local, "conn", None)
    if conn is not None and (_local.key != key or _gone(conn)):
        if _local.key[0] == os.getpid():
            conn.close()
        conn = None
    if conn is None:
        conn = open_autocommit("side")
        _local.conn, _local.key = conn, key
        with _opened_lock:
            _opened[:] = [(p, c) for p, c in _opened if not c.closed] + [(os.getpid(), conn)]
    return conn


@contextlib.contextmanager
def side_cursor() -> Iterator[psycopg.Cursor]:
    with _connection().cursor() as cur:
        yield cur


@contextlib.contextmanager
def side_pipeline() -> Iterator[psycopg.Connection]:
    """The side connection in pipeline mode: what is executed inside is sent at once and run
    in order, as one implicit transaction (one Sync, at the end); each statement still takes
    a snapshot of its own, since the side session is READ COMMITTED (common.db.open_autocommit).
    One round trip for all; the results are read after the block."""
    conn = _connection()
    with conn.pipeline():
        yield conn


def close() -> None:
    conn = getattr(_local, "conn", None)
    if conn is not None and _local.key[0] == os.getpid():
        conn.close()
    _local.conn = None


def close_all() -> None:
    """Close the side connections of every thread of this process (a test server's request
    threads open their own): when nothing runs any more, before the database is dropped."""
    with _opened_lock:
        mine = [c for p, c in _opened if p == os.getpid()]
        _opened.clear()
    for conn in mine:
        conn.close()
    _local.conn = None


def is_open() -> bool:
    """Has this thread a side connection now (one was used since the last close())?"""
    conn = getattr(_local, "conn", None)
    return conn is not None and not conn.closed
