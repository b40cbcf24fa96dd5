"""Admin building blocks for every app's ModelAdmin."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import models
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

from common.db import estimated_rows
from common.permissions import OperateAdminMixin

SECONDS = "%Y-%m-%d %H:%M:%S"

# What list_display and readonly_fields hold: a field's name, or a callable of the row.
Display = str | Callable[[Any], Any]

if TYPE_CHECKING:  # the mixins below are only ever mixed into a ModelAdmin
    _ModelAdmin = admin.ModelAdmin[Any]
else:
    _ModelAdmin = object


def to_the_second(value: datetime | None) -> str:
    """A time as the admin shows it where timing matters: to the second, in the current time
    zone (Django's default format stops at the minute, which hides a 1-2-4-8 s backoff)."""
    return "-" if value is None else timezone.localtime(value).strftime(SECONDS)


def seconds(name: str, label: str | None = None) -> Callable[[Any], str]:
    """A display of the datetime field `name` to the second, sortable by it; for list_display
    and readonly_fields."""

    @admin.display(description=label or name.replace("_", " "), ordering=name)
    def show(obj: Any) -> str:
        return to_the_second(getattr(obj, name))

    show.__name__ = f"{name}_to_the_second"
    return show


class SecondsAdminMixin(_ModelAdmin):
    """Every datetime field in list_display and readonly_fields shown to the second (the
    field itself then stays out of the form, so it is not shown twice)."""

    def _datetime_fields(self) -> dict[str, models.DateTimeField[Any, Any]]:
        return {f.name: f for f in self.model._meta.fields
                if isinstance(f, models.DateTimeField)}

    def _to_the_second(self, names: Sequence[Display]) -> list[Display]:
        found = self._datetime_fields()
        made: dict[str, Display] = self.__dict__.setdefault("_seconds_displays", {})
        for name in names:
            if isinstance(name, str) and name in found and name not in made:
                made[name] = seconds(name, str(found[name].verbose_name))
        return [made.get(n, n) if isinstance(n, str) else n for n in names]

    def get_list_display(self, request: HttpRequest) -> list[Display]:
        return self._to_the_second(super().get_list_display(request))

    # Django takes callables in readonly_fields as in list_display; django-stubs says str only
    def get_readonly_fields(  # type: ignore[override]
            self, request: HttpRequest, obj: Any = None) -> list[Display]:
        return self._to_the_second(super().get_readonly_fields(request, obj))

    def get_exclude(self, request: HttpRequest,
                    obj: Any = None) -> list[str] | tuple[str, ...] | None:
        replaced = [n for n in super().get_readonly_fields(request, obj)
                    if isinstance(n, str) and n in self._datetime_fields()]
        excluded = super().get_exclude(request, obj)
        return [*(excluded or []), *replaced] or excluded


class ReadOnlyAdminMixin(SecondsAdminMixin, OperateAdminMixin):
    """Log, ledger and queue pages: look (with the model's view permission: the Viewers and
    Operators groups have it), and act only through the admin actions, whose `operate`
    permission (retry, recover, arm) follows common.permissions, like the dashboard. Times to
    the second."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class _InState(Protocol):
    def in_state(self, state: str) -> models.QuerySet[Any]: ...


class StateFilter(admin.SimpleListFilter):
    """The list filter for a model whose states are `TextChoices` and whose QuerySet has
    `in_state(state)`: subclass it with `states = MyStates`."""

    title = "state"
    parameter_name = "state"
    states: type[models.TextChoices]

    def lookups(self, request: HttpRequest,
                model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return self.states.choices

    def queryset(self, request: HttpRequest,
                 queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        value = self.value()
        if value is not None and value in self.states.values:
            return cast(_InState, queryset).in_state(value)
        return queryset


class EstimatedCountPaginator(Paginator):  # type: ignore[type-arg]  # no [] at runtime
    """A list of a big table, unfiltered, counted from PostgreSQL's statistics instead of
    count(*) over every row (a second or more at millions). Filtered lists and small tables are
    counted exactly."""

    EXACT_BELOW = 50_000

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if isinstance(rows, models.QuerySet) and not rows.query.where:
            estimate = estimated_rows(rows.model._meta.db_table)
            if estimate >= self.EXACT_BELOW:
                return estimate
        return super().count


class BigTableAdminMixin:
    """For a table that grows with traffic: pages counted by estimate when unfiltered, and no
    second count(*) for "N total" beside a filter's result."""

    paginator: ClassVar[type[Paginator[Any]]] = EstimatedCountPaginator
    show_full_result_count = False


def recent_values_filter(field: str, title: str, *, newest: str = "-pk",
                         rows: int = 1000) -> type[admin.SimpleListFilter]:
    """A list filter on `field` offering the values of the newest `rows` rows: Django's own
    (`list_filter = ["func"]`) reads SELECT DISTINCT over the whole table at every page."""

    class RecentValues(admin.SimpleListFilter):
        parameter_name = field

        def lookups(self, request: HttpRequest,
                    model_admin: admin.ModelAdmin[Any]) -> list[tuple[Any, Any]]:
            seen = (model_admin.model._default_manager.order_by(newest)
                    .values_list(field, flat=True)[:rows])
            return [(v, v) for v in sorted({v for v in seen if v is not None})]

        def queryset(self, request: HttpRequest,
                     queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
            value = self.value()
            return queryset.filter(**{field: value}) if value else queryset

    RecentValues.title = title
    return RecentValues
