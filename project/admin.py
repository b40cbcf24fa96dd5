from functools import wraps

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.urls import path

from dashboard import views


def forbid_non_staff(view):
    """Signed in but not staff: 403 (the admin itself would send them to its login page)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.user.is_authenticated and not request.user.is_staff:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


class ReliableAdminSite(admin.AdminSite):
    site_header = "Reliable background work"
    site_title = "Reliable background work"
    index_title = "Break things, watch what survives"

    def get_urls(self):
        """Anonymous: the login page; signed in but not staff: 403; staff without the view's
        permission (dashboard.views, common.permissions): 403. admin_view adds CSRF."""

        def staff(view):
            return forbid_non_staff(self.admin_view(view))

        return [
            path("dashboard/", staff(views.dashboard), name="dashboard"),
            path("dashboard/panels/", staff(views.panels), name="dashboard_panels"),
            path("dashboard/do/<str:action>/", staff(views.control), name="dashboard_control"),
            *super().get_urls(),
        ]
