"""The dashboard's page, composed from what the apps registered (dashboard.registry)."""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from dashboard import registry
from dashboard.registry import Check, Control, Snapshot


def consistency_checks() -> list[Check]:
    """Every registered invariant, checked now."""
    return registry.checks()


@dataclass(frozen=True)
class RenderedPanel:
    name: str
    wide: bool
    html: SafeString


@dataclass(frozen=True)
class ShownControl:
    control: Control
    form: forms.Form | None


def rendered_panels(request: HttpRequest) -> list[RenderedPanel]:
    """Each registered panel rendered with its own context; one Snapshot for all of them."""
    snap = Snapshot()
    return [RenderedPanel(p.name, p.wide,
                          render_to_string(p.template, p.context(snap), request=request))
            for p in registry.panels()]


def _session_key(control: Control) -> str:
    return f"dashboard.last.{control.name}"


def remember(request: HttpRequest, control: Control, form: forms.Form) -> None:
    """Keep what the person submitted (a valid form), so the page shows it again instead of
    the presets; one entry per control, in the session."""
    request.session[_session_key(control)] = {
        name: form.data.get(name, "") for name in form.fields}


def shown_controls(request: HttpRequest | None = None) -> list[ShownControl]:
    """Each control with its form: what this person submitted last, else its presets."""
    session = getattr(request, "session", None) or {}
    return [ShownControl(c, registry.bound_form(c, initial=session.get(_session_key(c))))
            for c in registry.controls()]
