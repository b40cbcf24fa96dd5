from django.contrib import admin
from django.http import HttpRequest

from common.admin import (
    BigTableAdminMixin,
    ReadOnlyAdminMixin,
    StateFilter,
    recent_values_filter,
)
from outbox import services
from outbox.models import MessageState, OutboxMessage


class MessageStateFilter(StateFilter):
    states = MessageState


@admin.register(OutboxMessage)
class OutboxMessageAdmin(BigTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "topic", "state", "attempts", "created_at", "available_at",
                    "published_at", "dead_at", "short_error"]
    list_filter = [MessageStateFilter, recent_values_filter("topic", "topic", newest="-created_at")]
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
