"""Admin building blocks for every app's ModelAdmin."""

from django.contrib import admin
from django.db import models

from common.permissions import OperateAdminMixin


class ReadOnlyAdminMixin(OperateAdminMixin):
    """Log, ledger and queue pages: look, and act only through the admin actions, whose
    `operate` permission (retry, recover) follows common.permissions, like the dashboard."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class StateFilter(admin.SimpleListFilter):
    """The list filter for a model whose states are `TextChoices` and whose QuerySet has
    `in_state(state)`: subclass it with `states = MyStates`."""

    title = "state"
    parameter_name = "state"
    states: type[models.TextChoices]

    def lookups(self, request, model_admin):
        return self.states.choices

    def queryset(self, request, queryset):
        if self.value() in self.states.values:
            return queryset.in_state(self.value())
        return queryset
