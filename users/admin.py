from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import HttpRequest

from common.admin import BigTableAdminMixin, ReadOnlyAdminMixin
from users.models import EmailSend, User
from users.selectors import with_email_count

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class EmailCount(TypedDict):
    _emails: int  # with_email_count(..., "_emails")


@admin.register(User)
class UserAdmin(BigTableAdminMixin, DjangoUserAdmin):
    list_display = ["username", "signup_mode", "welcome_emails", "date_joined", "is_staff"]
    list_filter = ["signup_mode", "is_staff", "is_superuser"]
    fieldsets = [*(DjangoUserAdmin.fieldsets or ()), ("Signup", {"fields": ["signup_mode"]})]

    def get_queryset(self, request: HttpRequest):
        return with_email_count(super().get_queryset(request), "_emails")

    @admin.display(description="welcome emails", ordering="_emails")
    def welcome_emails(self, obj: WithAnnotations[User, EmailCount]) -> int:
        return obj._emails


@admin.register(EmailSend)
class EmailSendAdmin(BigTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["key", "user", "message_id", "sent_at"]
    search_fields = ["key", "user__username"]
    readonly_fields = ["user", "key", "message_id", "sent_at"]
