"""A fresh scratch database beside the project's own, for experiments and benchmarks (no
Django needed)."""

from __future__ import annotations

import os
from typing import Any


def scratch_database(name: str, *, drop_only: bool = False, base: str = "") -> str:
    """Drop and create database `name` on the project's PostgreSQL (or on the one whose URL
    `base` is); return its URL. `drop_only`: drop it, create nothing."""
    import dj_database_url
    import psycopg

    from devtools.local_postgres import default_database_url

    base = base or os.environ.get("DATABASE_URL") or default_database_url()
    head, _, _ = base.rpartition("/")
    cfg = dj_database_url.parse(base)
    params: dict[str, Any] = {"dbname": "postgres", "user": cfg["USER"], "host": cfg["HOST"],
                              "port": cfg["PORT"], "password": cfg["PASSWORD"] or None}
    with psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"{head}/{name}"
