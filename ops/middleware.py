"""The web process's probes, answered before every other middleware:

    GET /healthz/live   200 "live": the process answers requests (no database asked)
    GET /healthz/ready  200 "ready", or 503 "not ready: no database for 4 s (OperationalError)"

First in MIDDLEWARE, so a probe is not redirected to HTTPS (a redirect is a success to most
probes), needs no host name from ALLOWED_HOSTS (orchestrators probe the address), and reads no
session. Plain text, never cached. What "ready" means: ops.health."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from ops.health import web_unready

LIVE, READY = "/healthz/live", "/healthz/ready"


def _answer(status: int, text: str) -> HttpResponse:
    response = HttpResponse(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


class HealthMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info.rstrip("/")
        if path not in (LIVE, READY):
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = _answer(405, "GET or HEAD")
            response["Allow"] = "GET, HEAD"
            return response
        if path == LIVE:
            return _answer(200, "live")
        why = web_unready()
        return _answer(503, f"not ready: {why}") if why else _answer(200, "ready")
