"""What the dashboard and `check_consistency` show, registered by the apps that own it.

The dashboard knows no app's models: each app registers, in its `AppConfig.ready()`,

- checks: a function that returns `Check`s (the invariants it promises, each with a status);
- panels: a template and a function giving its context (a box on the live part of the page);
- controls: a form the page shows to operators, and the function its POST calls.

Functions get the page's `Snapshot`, so work several of them need (every signup's email
count, say) is done once per refresh:

    from dashboard import registry

    def my_checks(snap):
        rows = snap.get("orders", load_orders)
        return [registry.Check.of("orders_unpaid", "every order is paid",
                                  [o.pk for o in rows if not o.paid], registry.Status.VIOLATION)]

    registry.register_checks("orders", my_checks, order=50)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from django import forms
from django.contrib import messages
from django.db import models
from django.http import HttpRequest


class Status(models.TextChoices):
    OK = "ok", "ok"
    EXPECTED = "expected", "expected anomaly"  # what the product exists to show (dual-write)
    ATTENTION = "attention", "attention"  # a person should look; nothing is lost
    VIOLATION = "violation", "violation"  # a promise broke


@dataclass
class Check:
    name: str
    description: str
    status: Status
    count: int = 0
    ids: list = field(default_factory=list)

    @classmethod
    def of(cls, name: str, description: str, ids: list, bad: Status, *,
           count: int | None = None) -> Check:
        """`bad` when anything was found, ok otherwise. `count`: how many in all, when `ids`
        lists only the first few."""
        count = len(ids) if count is None else count
        return cls(name, description, bad if count else Status.OK, count, list(ids))

    def as_dict(self) -> dict:
        return {**asdict(self), "status": str(self.status)}


class Snapshot:
    """One refresh of the page: a memo of what several checks and panels read."""

    def __init__(self) -> None:
        self._memo: dict[str, Any] = {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


CheckSource = Callable[[Snapshot], list[Check]]


@dataclass(frozen=True)
class Panel:
    name: str  # the box's element id is panel-<name>
    template: str
    context: Callable[[Snapshot], dict]
    order: int = 100
    wide: bool = False  # a full-width box, or one of the small boxes side by side


@dataclass(frozen=True)
class Control:
    """An operator's form on the dashboard. `run(cleaned_data)` does it (through the app's
    services) and returns (message level, text); an `OperationError` it raises is shown as an
    error. `form` None: a single button."""

    name: str  # the URL's action name and the form's element id (<name>-form)
    title: str
    run: Callable[[dict], tuple[int, str]]
    form: type[forms.Form] | None = None
    initial: Callable[[], dict] = dict
    button: str = "Do it"
    help: str = ""
    order: int = 100


_checks: dict[str, tuple[int, CheckSource]] = {}
_panels: dict[str, Panel] = {}
_controls: dict[str, Control] = {}


def register_checks(name: str, source: CheckSource, *, order: int = 100) -> None:
    _checks[name] = (order, source)


def register_panel(panel: Panel) -> None:
    _panels[panel.name] = panel


def register_control(control: Control) -> None:
    _controls[control.name] = control


def unregister(name: str) -> None:
    """Forget the checks, panel and control registered under `name` (tests)."""
    _checks.pop(name, None)
    _panels.pop(name, None)
    _controls.pop(name, None)


def checks(snap: Snapshot | None = None) -> list[Check]:
    snap = snap or Snapshot()
    found: list[Check] = []
    for _, source in sorted(_checks.values(), key=lambda pair: pair[0]):
        found.extend(source(snap))
    return found


def violations(found: list[Check]) -> list[Check]:
    return [c for c in found if c.status == Status.VIOLATION]


def panels() -> list[Panel]:
    return sorted(_panels.values(), key=lambda p: p.order)


def controls() -> list[Control]:
    return sorted(_controls.values(), key=lambda c: c.order)


def control(name: str) -> Control | None:
    return _controls.get(name)


def bound_form(control: Control, request: HttpRequest | None = None, *,
               initial: dict | None = None) -> forms.Form | None:
    """The control's form: bound to a POST, else showing `initial` (what the person submitted
    last) or the control's presets."""
    if control.form is None:
        return None
    if request is not None and request.method == "POST":
        return control.form(request.POST)
    return control.form(initial=control.initial() if initial is None else initial)


def invalid(form: forms.Form) -> tuple[int, str]:
    errors = "; ".join(f"{k}: {' '.join(str(e) for e in v)}" for k, v in form.errors.items())
    return messages.ERROR, f"Not done: {errors}"
