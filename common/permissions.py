"""Who may do what: the one rule module, used by every admin page, action, view and template.

- Look: `can_view_dashboard` (the permission `dashboard.view_dashboard`, group "Viewers"): the
  dashboard and its panels; the admin's pages of the project's models follow their model's
  view permission, which the Viewers group also has. Read-only.
- Operate: `can_operate` (`dashboard.operate`, group "Operators"): change what runs. Arm and
  disarm faults, sign up users and start trips and experiments from the web, retry (parked
  jobs, dead messages, stuck sagas, failed tasks), relay or recover now, break Redis, edit
  django-q2's queue and schedules.

Superusers may do both. Everyone needs `is_staff` to reach the admin at all; anonymous
visitors are sent to its login page, and signed-in people without the permission get 403.
Nothing here changes state on GET: every operation is a POST (with CSRF, as all of the admin).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, Concatenate, ParamSpec, Protocol

from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest
from django.http.response import HttpResponseBase

VIEW_DASHBOARD = "dashboard.view_dashboard"
OPERATE = "dashboard.operate"
VIEWERS, OPERATORS = "Viewers", "Operators"  # the groups (dashboard/migrations/0002)

P = ParamSpec("P")
View = Callable[Concatenate[HttpRequest, P], HttpResponseBase]


class Person(Protocol):
    """Who the rules ask about: a user, or AnonymousUser (request.user before login)."""

    @property
    def is_active(self) -> bool: ...

    @property
    def is_superuser(self) -> bool: ...

    def has_perm(self, perm: str, obj: Model | None = None) -> bool: ...


def can_operate(user: Person) -> bool:
    return bool(user.is_active and (user.is_superuser or user.has_perm(OPERATE)))


def can_view_dashboard(user: Person) -> bool:
    return bool(user.is_active and (user.is_superuser or user.has_perm(VIEW_DASHBOARD)
                                    or user.has_perm(OPERATE)))


def _required(rule: Callable[[Person], bool], view: View[P]) -> View[P]:
    @wraps(view)
    def wrapper(request: HttpRequest, /, *args: P.args, **kwargs: P.kwargs) -> HttpResponseBase:
        if not rule(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


def operate_required(view: View[P]) -> View[P]:
    """A view only operators may call; everyone else gets 403."""
    return _required(can_operate, view)


def view_dashboard_required(view: View[P]) -> View[P]:
    """A view for viewers and operators; everyone else gets 403."""
    return _required(can_view_dashboard, view)


class OperateAdminMixin:
    """ModelAdmin actions with `permissions=["operate"]` follow the rule."""

    def has_operate_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_operate(request.user)


class OperatorsEditAdminMixin(OperateAdminMixin):
    """Rows only operators may add, change or delete, whatever model permissions say (django-q2's
    queue, schedules and results: a schedule's `func` is any callable). Looking follows the
    model's view permission. `allow_add = False`: nobody adds."""

    allow_add = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.allow_add and can_operate(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_operate(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_operate(request.user)


def context(request: HttpRequest) -> dict[str, bool]:
    """Template context processor: `can_operate` and `can_view_dashboard` on every page."""
    user = getattr(request, "user", None)
    return {"can_operate": user is not None and can_operate(user),
            "can_view_dashboard": user is not None and can_view_dashboard(user)}
