"""/metrics: Prometheus' text format (OpenMetrics when the scraper asks for it), computed when
scraped (ops.metrics).

Who may read it: a scraper that sends METRICS_TOKEN (`Authorization: Bearer <token>`, or basic
auth with the token as the password and any user name), or a person signed in as the dashboard
asks: staff, with its view permission (common.permissions). Anyone else: 401 (not signed in, no or a
wrong token) or 403 (signed in without the permission)."""

from __future__ import annotations

import base64
import binascii
import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client.exposition import choose_encoder

from common.permissions import can_view_dashboard
from ops.metrics import Collector


def presented_token(request: HttpRequest) -> str | None:
    """The token in the Authorization header: a bearer token, or a basic password."""
    kind, _, value = request.headers.get("Authorization", "").partition(" ")
    if kind.lower() == "bearer":
        return value.strip()
    if kind.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def token_ok(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    given = presented_token(request)
    return bool(expected and given is not None
                and hmac.compare_digest(given.encode(), expected.encode()))


def _refused(status: int, text: str) -> HttpResponse:
    response = HttpResponse(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not token_ok(request):
        if not request.user.is_authenticated:
            return _refused(401, "send METRICS_TOKEN as a bearer token, or sign in "
                                 "(docs/metrics.md)" if settings.METRICS_TOKEN else
                            "sign in with the dashboard's view permission, or set "
                            "METRICS_TOKEN for a scraper (docs/metrics.md)")
        if not (request.user.is_staff and can_view_dashboard(request.user)):
            return _refused(403, "you lack staff status or the dashboard's view permission")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(Collector()), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
