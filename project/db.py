"""Extra PostgreSQL connections beside Django's own (for LISTEN, and for fault bookkeeping)."""

import psycopg
from django.db import connections


def connection_params(alias: str = "default") -> dict:
    """psycopg keyword arguments for `alias`, as it is configured now (test database included)."""
    s = connections[alias].settings_dict
    params = {"dbname": s["NAME"], "user": s["USER"], "password": s["PASSWORD"],
              "host": s["HOST"], "port": s["PORT"]}
    return {k: v for k, v in params.items() if v not in (None, "")}


def open_autocommit(application_name: str) -> psycopg.Connection:
    return psycopg.connect(**connection_params(), autocommit=True,
                           application_name=application_name)
