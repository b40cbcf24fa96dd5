"""The tasks, hooks and signal receivers of the conformance suite. Each writes what happened
(an event: kind, key, detail, the pid of the process) to the table `conformance_event`, which
the suite creates (conftest.py); the test process reads it to see what ran, how often, in
which order and in which process."""

from __future__ import annotations

import os
import time

from django.db import connection

TABLE = "conformance_event"
CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    key text NOT NULL,
    detail text NOT NULL DEFAULT '',
    pid integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


def record(kind: str, key: str, detail: str = "") -> None:
    with connection.cursor() as cur:
        cur.execute(f"INSERT INTO {TABLE} (kind, key, detail, pid) VALUES (%s, %s, %s, %s)",
                    [kind, str(key), detail, os.getpid()])


# --- tasks --------------------------------------------------------------------------------


def add(a: int, b: int) -> int:
    return a + b


def run(key: str) -> str:
    """Says that it ran (and in which process); returns its key."""
    record("run", key)
    return key


def fail(key: str) -> None:
    record("run", key)
    raise RuntimeError(f"conformance failure {key}")


def nap(key: str, seconds: float) -> str:
    """Sleeps; "start" before, "end" after (a task killed by its timeout has no "end")."""
    record("start", key)
    time.sleep(seconds)
    record("end", key)
    return key


def whoami() -> int:
    return os.getpid()


# --- hooks and signals --------------------------------------------------------------------


def hook(task) -> None:
    """A django-q2 result hook: called with the saved Task."""
    record("hook", task.id, f"{task.success}:{task.result}")


def on_pre_enqueue(sender, task, **kwargs) -> None:
    record("pre_enqueue", task["id"])


def on_pre_execute(sender, func, task, **kwargs) -> None:
    record("pre_execute", task["id"], getattr(func, "__name__", str(func)))


def on_post_execute(sender, task, **kwargs) -> None:
    record("post_execute", task["id"], f"{task['success']}:{task['result']}")


def connect_signals() -> None:
    from django_q.signals import post_execute, pre_enqueue, pre_execute

    pre_enqueue.connect(on_pre_enqueue, dispatch_uid="conformance.pre_enqueue")
    pre_execute.connect(on_pre_execute, dispatch_uid="conformance.pre_execute")
    post_execute.connect(on_post_execute, dispatch_uid="conformance.post_execute")


def disconnect_signals() -> None:
    from django_q.signals import post_execute, pre_enqueue, pre_execute

    pre_enqueue.disconnect(dispatch_uid="conformance.pre_enqueue")
    pre_execute.disconnect(dispatch_uid="conformance.pre_execute")
    post_execute.disconnect(dispatch_uid="conformance.post_execute")
