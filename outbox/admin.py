from django.contrib import admin
from django.db.models import Q
from django.http import HttpRequest

from outbox import services
from outbox.models import OutboxMessage
from project.admin import ReadOnlyAdminMixin


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("pending", "pending"), ("published", "published"), ("dead", "dead")]

    def queryset(self, request, queryset):
        if self.value() == "pending":
            return queryset.filter(published_at__isnull=True, dead_at__isnull=True)
        if self.value() == "published":
            return queryset.filter(published_at__isnull=False)
        if self.value() == "dead":
            return queryset.filter(Q(dead_at__isnull=False) & Q(published_at__isnull=True))
        return queryset


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "topic", "state", "attempts", "created_at", "available_at",
                    "published_at", "dead_at", "short_error"]
    list_filter = [StateFilter, "topic"]
    search_fields = ["id", "topic"]
    readonly_fields = [f.name for f in OutboxMessage._meta.fields]
    actions = ["retry_dead"]

    @admin.display(description="last error")
    def short_error(self, obj: OutboxMessage) -> str:
        lines = obj.last_error.strip().splitlines()
        return lines[-1][:100] if lines else ""

    @admin.action(description="Retry selected dead messages", permissions=["operate"])
    def retry_dead(self, request: HttpRequest, queryset) -> None:
        n = services.retry_dead(messages=queryset)
        self.message_user(request, f"{n} dead message(s) are pending again.")
