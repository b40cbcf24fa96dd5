"""Extra PostgreSQL connections beside Django's own (for LISTEN, and for fault bookkeeping)."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import quote

import psycopg
from django.db import connections, transaction

from pgbroker.connection import connection_params as _params


def connection_params(alias: str = "default") -> dict[str, Any]:
    """psycopg keyword arguments for `alias` as Django connects now (the test database, and the
    URL's OPTIONS: sslmode, certificates, options), with a connect timeout and keepalives."""
    return _params(alias)


def database_url(alias: str = "default") -> str:
    """A postgresql:// URL for `alias` as configured now (the test database included), for a
    process that must reach the same database."""
    s = connections[alias].settings_dict
    host = quote(s["HOST"] or "", safe="")
    user = quote(s["USER"] or "", safe="")
    password = f":{quote(s['PASSWORD'], safe='')}" if s["PASSWORD"] else ""
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgresql://{user}{password}@{host}{port}/{s['NAME']}"


def program_name(alias: str = "default") -> str:
    """What this process is, as pg_stat_activity shows its Django connection (settings)."""
    options: dict[str, Any] = connections[alias].settings_dict.get("OPTIONS", {})
    return str(options.get("application_name", ""))


def open_autocommit(application_name: str) -> psycopg.Connection:
    """An autocommit connection beside Django's, named "<program>: <application_name>", READ
    COMMITTED whatever the server's default (a statement after a lock wait must see what
    was committed during the wait)."""
    name = f"{program_name()}: {application_name}".lstrip(": ")[:63]
    conn = psycopg.connect(**connection_params(), autocommit=True, application_name=name)
    conn.execute("SET default_transaction_isolation = 'read committed'")
    return conn


def db_now(using: str = "default") -> datetime:
    """The database's clock (`now()`: the transaction's start inside one). Every time that one
    process writes and another compares is read from it, so hosts whose clocks disagree still
    agree on what is due, expired or old."""
    with connections[using].cursor() as cur:
        cur.execute("SELECT now()")
        now: datetime = cur.fetchone()[0]
        return now


@contextmanager
def snapshot(using: str = "default") -> Iterator[None]:
    """Every query inside sees one snapshot of the database: a read-only REPEATABLE READ
    transaction. A verdict read in several queries (users, then their emails, then their jobs)
    must not see a row committed between two of them: a user committed with its job between
    the query for jobs and the query for users looks lost.

    Inside a transaction already open (a test's, or a caller's), the caller's transaction
    decides: PostgreSQL takes the isolation level only as a transaction's first statement."""
    conn = connections[using]
    if conn.in_atomic_block:
        yield
        return
    with transaction.atomic(using=using):
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def estimated_rows(table: str, using: str = "default") -> int:
    """How many rows `table` holds, from PostgreSQL's statistics (pg_class.reltuples, what
    ANALYZE or autovacuum last counted): free to read where count(*) reads the whole table.
    Counted exactly when the table was never analyzed."""
    with connections[using].cursor() as cur:
        cur.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                    [table])
        row = cur.fetchone()
        if row is None:
            return 0
        if row[0] >= 0:
            return int(row[0])
        cur.execute(f'SELECT count(*) FROM "{table}"')  # noqa: S608 (a model's own table)
        return int(cur.fetchone()[0])
