"""Extra PostgreSQL connections beside Django's own (for LISTEN, and for fault bookkeeping)."""

import psycopg

from pgbroker.store import connection_params as _params


def connection_params(alias: str = "default") -> dict:
    """psycopg keyword arguments for `alias` as Django connects now (the test database, and the
    URL's OPTIONS: sslmode, certificates, options), with a connect timeout and keepalives."""
    return _params(alias)


def open_autocommit(application_name: str) -> psycopg.Connection:
    return psycopg.connect(**connection_params(), autocommit=True,
                           application_name=application_name)
