"""The queue, read-only: every job with its state and, when it is not running, why.

pgbroker imports nothing from the project that uses it (it is a package of its own): who may
retry follows Django's `pgbroker.change_job` permission here; a project that has a rule of its
own re-registers these ModelAdmins with it (this project does, in jobs/admin.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from pgbroker import selectors, services
from pgbroker.models import Cluster, Job, JobQuerySet
from pgbroker.selectors import State


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"
    CHOICES: dict[str, tuple[str, Callable[[JobQuerySet], JobQuerySet]]] = {
        "claimed": ("running or claimed", lambda qs: qs.claimed()),
        State.READY: ("ready", lambda qs: qs.ready()),
        State.RETRYING: ("waiting for a retry", lambda qs: qs.retrying()),
        State.PARKED: ("parked", lambda qs: qs.parked()),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in self.CHOICES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        choice = self.CHOICES.get(self.value() or "")
        return choice[1](cast(JobQuerySet, queryset)) if choice else queryset


class ReadOnlyAdminMixin:
    """Look, never add, change or delete; act only through the admin actions that declare
    `permissions=["operate"]` (retry parked jobs)."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return request.user.has_perm("pgbroker.change_job")


class ReadOnly(ReadOnlyAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    pass


@admin.register(Job)
class JobAdmin(ReadOnly):
    list_display = ["id", "task", "state", "why", "priority", "attempts", "created_at",
                    "run_at"]
    list_filter = [StateFilter, "queue", "priority"]
    search_fields = ["id"]
    actions = ["retry_parked"]
    list_per_page = 50
    readonly_fields = ["queue", "task", "state", "why", "priority", "attempts", "created_at",
                       "run_at", "claimed_at", "owner", "parked_at", "last_error"]
    exclude = ["payload"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).order_by("id")

    def _view(self, obj: Job) -> selectors.JobView:
        return selectors.view(obj)

    @admin.display(description="task")
    def task(self, obj: Job) -> str:
        view = self._view(obj)
        kwargs = ", ".join(f"{k}={v!r}" for k, v in view.kwargs.items())
        return f"{view.func}({kwargs})"

    @admin.display(description="state")
    def state(self, obj: Job) -> str:
        view = self._view(obj)
        colors: dict[str, str] = {State.PARKED: "#ba2121", State.RETRYING: "#b07000",
                                  State.ORPHANED: "#ba2121"}
        color = colors.get(view.state, "inherit")
        return format_html('<span style="color:{}">{}</span>', color, view.state)

    @admin.display(description="why")
    def why(self, obj: Job) -> str:
        return self._view(obj).why

    @admin.action(description="Retry parked jobs (fresh attempts)", permissions=["operate"])
    def retry_parked(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        n = services.retry_parked(jobs=cast(JobQuerySet, queryset),
                                  by=request.user.get_username())
        self.message_user(request, f"{n} parked job(s) will run again now.")


@admin.register(Cluster)
class ClusterAdmin(ReadOnly):
    list_display = ["owner_hex", "queue", "host", "pid", "started_at", "seen_at", "idle",
                    "running"]

    @admin.display(description="owner")
    def owner_hex(self, obj: Cluster) -> str:
        return f"{obj.owner:x}"

    @admin.display(description="workers (pid: job)")
    def running(self, obj: Cluster) -> str:
        return ", ".join(f"{w['pid']}: {w['job'] or 'idle'}" for w in obj.workers or []
                         if w.get("pid"))
