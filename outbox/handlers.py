"""Topic -> handler. A handler runs inside the relay's transaction, so the django-q2 task it
enqueues commits together with "published" (same database, same transaction), or not at all.

A handler raises PermanentError for a message that can never succeed (a bad payload): it goes
dead at once instead of being retried.
"""

from collections.abc import Callable

from django_q.tasks import async_task


class PermanentError(Exception):
    """This message can never be handled: retrying will not help."""


def enqueue_only(handler: Callable[[dict], None]) -> Callable[[dict], None]:
    """Marks a handler that writes nothing but its async_task(): the relay then needs no
    savepoint for it, and its jobs join the batch's one multi-row INSERT."""
    handler.enqueue_only = True
    return handler


@enqueue_only
def enqueue_welcome_email(payload: dict) -> None:
    user_id = payload.get("user_id") if isinstance(payload, dict) else None
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        raise PermanentError(f"payload needs a positive integer user_id, got {payload!r}")
    async_task("users.tasks.send_welcome_email", user_id=user_id)


HANDLERS: dict[str, Callable[[dict], None]] = {
    "user.welcome_email": enqueue_welcome_email,
}
