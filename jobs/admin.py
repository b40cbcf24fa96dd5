from django.contrib import admin
from django.http import HttpRequest

from common.admin import StateFilter
from common.permissions import OperateAdminMixin
from jobs import services
from jobs.models import JobRun, RunState


class RunStateFilter(StateFilter):
    states = RunState


@admin.register(JobRun)
class JobRunAdmin(OperateAdminMixin, admin.ModelAdmin):
    list_display = ["key", "func", "state", "attempts", "last_pid", "last_started_at",
                    "finished_at", "parked_at", "short_error"]
    list_filter = [RunStateFilter, "func"]
    search_fields = ["key"]
    readonly_fields = [f.name for f in JobRun._meta.fields]
    actions = ["retry_parked"]

    @admin.display(description="last error")
    def short_error(self, obj: JobRun) -> str:
        return obj.last_error[:80]

    @admin.action(description="Retry parked jobs (fresh attempts)", permissions=["operate"])
    def retry_parked(self, request: HttpRequest, queryset) -> None:
        n = services.retry_parked(runs=queryset)
        self.message_user(request, f"{n} parked job(s) will run on their next delivery.")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
