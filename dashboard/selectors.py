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


def shown_controls() -> list[ShownControl]:
    return [ShownControl(c, registry.bound_form(c)) for c in registry.controls()]
