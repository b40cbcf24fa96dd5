"""Extra PostgreSQL connections beside Django's own (for LISTEN, and for fault bookkeeping)."""

import psycopg

from pgbroker.store import connection_params as _params


def connection_params(alias: str = "default") -> dict:
    """psycopg keyword arguments for `alias` as Django connects now (the test database, and the
    URL's OPTIONS: sslmode, certificates, options), with a connect timeout and keepalives."""
    return _params(alias)


def database_url(alias: str = "default") -> str:
    """A postgresql:// URL for `alias` as configured now (the test database included), for a
    process that must reach the same database."""
    from urllib.parse import quote

    from django.db import connections

    s = connections[alias].settings_dict
    host = quote(s["HOST"] or "", safe="")
    user = quote(s["USER"] or "", safe="")
    password = f":{quote(s['PASSWORD'], safe='')}" if s["PASSWORD"] else ""
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgresql://{user}{password}@{host}{port}/{s['NAME']}"


def open_autocommit(application_name: str) -> psycopg.Connection:
    return psycopg.connect(**connection_params(), autocommit=True,
                           application_name=application_name)


def db_now(using: str = "default"):
    """The database's clock (`now()`: the transaction's start inside one). Every time that one
    process writes and another compares is read from it, so hosts whose clocks disagree still
    agree on what is due, expired or old."""
    from django.db import connections

    with connections[using].cursor() as cur:
        cur.execute("SELECT now()")
        return cur.fetchone()[0]
