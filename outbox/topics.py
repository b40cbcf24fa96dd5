"""Outbox topics, registered by the apps that publish them (in their AppConfig.ready()).

A topic says what a message becomes: a job (`task`, with keyword arguments built from the
payload) on a store (`jobs.queues.Store`: the PostgreSQL queue, in the relay's transaction, or
Redis, pushed before the relay commits). `done`, when given, tells whether the work a message
asked for has happened: reconciliation publishes again a message whose job a store lost.
The outbox itself knows no topic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from jobs.queues import Store

ALREADY_REGISTERED = "outbox topic {name!r} is already registered with another definition"


class PermanentError(Exception):
    """This message can never be handled: retrying will not help (a bad payload)."""


@dataclass(frozen=True)
class Topic:
    name: str
    task: str                          # dotted path of the django-q2 task the message becomes
    store: Store                       # where that job is enqueued
    kwargs: Callable[[dict], dict]     # payload -> the task's kwargs; PermanentError if never
    # reconciliation: for each payload, is there nothing left to do (or is its job running
    # right now, started less than `older_than` seconds ago)?
    done: Callable[..., list[bool]] | None = None
    description: str = ""
    # Keep a row of the job's success (django-q2's `save`)? A failure is always kept.
    save: bool = True

    @property
    def options(self) -> dict:
        """The job's django-q2 options (async_task keywords)."""
        return {} if self.save else {"save": False}


_TOPICS: dict[str, Topic] = {}


def register(topic: Topic) -> Topic:
    existing = _TOPICS.get(topic.name)
    if existing is not None and existing != topic:
        raise ImproperlyConfigured(ALREADY_REGISTERED.format(name=topic.name))
    _TOPICS[topic.name] = topic
    return topic


def unregister(name: str) -> None:
    _TOPICS.pop(name, None)


def get(name: str) -> Topic | None:
    return _TOPICS.get(name)


def names() -> list[str]:
    return sorted(_TOPICS)
