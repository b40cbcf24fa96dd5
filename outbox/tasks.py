"""django-q2 entry points for the outbox: the dashboard's "relay now", and the once-a-minute
backstop for when no `relay_outbox --follow` runs."""

from outbox import services


def relay_outbox() -> str:
    r = services.relay_outbox()
    return str(r)
