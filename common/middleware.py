"""What the web process does when PostgreSQL has no connection slot for it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from pgbroker.connection import no_slot

logger = logging.getLogger(__name__)
RETRY_AFTER = 5  # seconds
SAY_EVERY = 60.0  # seconds between two log lines while it lasts


class NoSlotMiddleware:
    """A page that could not get a database connection for want of a slot (max_connections,
    a role's or database's CONNECTION LIMIT) answers 503 with Retry-After and a page saying
    so, and the log says it in one line a minute, not a traceback per request. The next
    request tries again: nothing to recover."""

    last_said = 0.0

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest,
                          exception: Exception) -> HttpResponse | None:
        if not no_slot(exception):
            return None
        now = time.monotonic()
        if now - NoSlotMiddleware.last_said >= SAY_EVERY:
            NoSlotMiddleware.last_said = now
            logger.error("PostgreSQL has no connection slot for the web process: answering "
                         "503 (%s)", " ".join(str(exception).split()))
        html = render_to_string("503_no_slot.html", {"retry_after": RETRY_AFTER})
        response = HttpResponse(html, status=503)
        response["Retry-After"] = str(RETRY_AFTER)
        return response
