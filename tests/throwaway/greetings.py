"""The throwaway app's whole domain: a greeting is a file `<dir>/<to>.txt`."""

from __future__ import annotations

from pathlib import Path

from dashboard.registry import Check, Snapshot, Status
from faults.services import fire
from outbox.models import OutboxMessage
from outbox.topics import PermanentError

TOPIC = "throwaway.greeting"
POINT = "throwaway.greet"


def greet_kwargs(payload: dict) -> dict:
    if not isinstance(payload.get("to"), str) or not isinstance(payload.get("dir"), str):
        raise PermanentError("a greeting needs 'to' and 'dir'")
    return {"to": payload["to"], "dir": payload["dir"]}


def greet(*, to: str, dir: str) -> str:  # noqa: A002 (the payload's name)
    fire(POINT)
    (Path(dir) / f"{to}.txt").write_text(f"hello {to}\n")
    return f"greeted {to}"


def unanswered() -> list[str]:
    """Greetings published whose file is not there."""
    return sorted(p["to"] for p in OutboxMessage.objects.published().filter(topic=TOPIC)
                  .values_list("payload", flat=True)
                  if not (Path(p["dir"]) / f"{p['to']}.txt").exists())


def checks(snap: Snapshot) -> list[Check]:
    return [Check.of("greetings_unanswered", "every published greeting was written",
                     unanswered(), Status.VIOLATION)]
