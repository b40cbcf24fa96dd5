"""Admin building blocks for every app's ModelAdmin."""

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
