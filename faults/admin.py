from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse

from common.admin import ReadOnlyAdminMixin
from faults import services
from faults.models import Action, Fault
from faults.points import POINTS


def _arm_action(action: str, times: int | None, label: str):
    @admin.action(description=label, permissions=["operate"])
    def arm(modeladmin, request: HttpRequest, queryset) -> None:
        names = []
        for fault in queryset.filter(scope=""):
            try:
                services.arm(point=fault.point, action=action, times=times, delay_ms=2000)
            except services.FaultError as e:
                modeladmin.message_user(request, str(e), messages.ERROR)
                return
            names.append(fault.point)
        modeladmin.message_user(request, f"Armed {', '.join(names)}: {label.lower()}.")

    arm.__name__ = f"arm_{action}_{'always' if times is None else times}"
    return arm


class ScopeFilter(admin.SimpleListFilter):
    """Global fault points by default; the faults that travel with one job on request."""

    title = "armed for"
    parameter_name = "for"

    def lookups(self, request, model_admin):
        return [("everyone", "whatever passes next"), ("job", "one job (create_user --fail, ...)")]

    def choices(self, changelist):
        for value, title in self.lookup_choices:
            yield {
                "selected": (self.value() or "everyone") == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": title,
            }

    def queryset(self, request, queryset):
        if self.value() == "job":
            return queryset.exclude(scope="")
        return queryset.filter(scope="")


@admin.register(Fault)
class FaultAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["point", "description", "armed", "action", "remaining", "fired",
                    "last_fired_at", "scope"]
    list_filter = [ScopeFilter, "action"]
    search_fields = ["point", "scope"]
    actions = [
        _arm_action(Action.RAISE, 1, "Arm: raise once"),
        _arm_action(Action.CRASH, 1, "Arm: crash once"),
        _arm_action(Action.DELAY, 1, "Arm: delay 2 s once"),
        _arm_action(Action.RAISE, None, "Arm: raise always"),
        "disarm",
    ]
    change_list_template = "admin/faults/fault/change_list.html"

    def changelist_view(self, request, extra_context=None):
        """Reads only (a GET writes nothing): the declared points that have no row yet (never
        armed) are listed above the table; an operator's "List them" (a POST) adds their rows
        so the arm actions can select them. The dashboard's form arms any declared point."""
        listed = set(Fault.objects.filter(scope="").values_list("point", flat=True))
        unlisted = [(p, POINTS[p]) for p in sorted(POINTS) if p not in listed]
        extra = {"unlisted_points": unlisted, "can_list": self.has_operate_permission(request)}
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def get_urls(self):
        return [path("list-points/", self.admin_site.admin_view(self.list_points_view),
                     name="faults_fault_list_points"),
                *super().get_urls()]

    def list_points_view(self, request: HttpRequest):
        if request.method != "POST" or not self.has_operate_permission(request):
            raise PermissionDenied
        services.sync_points()
        self.message_user(request, "Every declared fault point is listed.")
        return HttpResponseRedirect(reverse("admin:faults_fault_changelist"))

    @admin.display(description="what it interrupts")
    def description(self, obj: Fault) -> str:
        return POINTS.get(obj.point, "(no longer declared)")

    @admin.display(boolean=True)
    def armed(self, obj: Fault) -> bool:
        return obj.is_armed

    @admin.action(description="Disarm", permissions=["operate"])
    def disarm(self, request: HttpRequest, queryset) -> None:
        n = sum(services.disarm(point=f.point, scope=f.scope) for f in queryset)
        self.message_user(request, f"Disarmed {n} fault point(s).")
