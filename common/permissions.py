"""Who may operate: change what runs (arm faults, start trips and experiments, retry, relay
or recover now, break Redis). The one rule, used by every admin page, action, view and
template (as `can_operate`, see `context`); looking needs only staff."""

from __future__ import annotations

from functools import wraps

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest


def can_operate(user) -> bool:
    return bool(user.is_active and user.is_superuser)


def operate_required(view):
    """A view only operators may call; everyone else gets 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not can_operate(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


class OperateAdminMixin:
    """ModelAdmin actions with `permissions=["operate"]` follow the rule."""

    def has_operate_permission(self, request: HttpRequest, obj=None) -> bool:
        return can_operate(request.user)


def context(request: HttpRequest) -> dict:
    """Template context processor: `can_operate` on every page."""
    user = getattr(request, "user", None)
    return {"can_operate": user is not None and can_operate(user)}
