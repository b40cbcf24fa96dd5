from django.contrib.admin.apps import AdminConfig


class ReliableAdminConfig(AdminConfig):
    """The admin, with the dashboard page added to its URLs (project.admin)."""

    default_site = "project.admin.ReliableAdminSite"
