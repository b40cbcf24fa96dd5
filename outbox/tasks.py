"""django-q2 entry points for the outbox (the dashboard's "relay now" runs here)."""

from outbox import services


def relay_outbox() -> str:
    r = services.relay_outbox()
    return f"{r.published} published, {r.failed} failed, {r.dead} dead"
