"""The dashboard: every mechanism on one admin page, and the controls to break them.

The page is composed from what the apps registered (dashboard.registry): panels on the live
part, refreshed every couple of seconds, and the operators' controls, each calling the same
service function as the matching command. Who may do what: common.permissions (viewers look,
operators use the controls); project.admin wires these views into the admin (login, staff,
CSRF)."""

from django.apps import apps
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from common.errors import OperationError
from common.permissions import operate_required, view_dashboard_required
from dashboard import registry
from dashboard.selectors import remember, rendered_panels, shown_controls


@require_safe
@view_dashboard_required
def dashboard(request: HttpRequest) -> HttpResponse:
    context = {**admin.site.each_context(request), "title": "Dashboard",
               "panels": rendered_panels(request), "controls": shown_controls(request),
               # the talk's steps arm faults and break Redis: shown while faults are installed
               "faults_installed": apps.is_installed("faults")}
    return TemplateResponse(request, "admin/dashboard/dashboard.html", context)


@require_safe
@view_dashboard_required
def panels(request: HttpRequest) -> HttpResponse:
    """The live part of the page, fetched every couple of seconds."""
    return TemplateResponse(request, "admin/dashboard/_panels.html",
                            {"panels": rendered_panels(request)})


@require_POST
@operate_required
def control(request: HttpRequest, action: str) -> HttpResponse:
    found = registry.control(action)
    if found is None:
        raise PermissionDenied
    form = registry.bound_form(found, request)
    if form is not None and not form.is_valid():
        level, text = registry.invalid(form)
    else:
        if form is not None:
            remember(request, found, form)
        try:
            level, text = found.run(form.cleaned_data if form is not None else {})
        except OperationError as e:
            level, text = messages.ERROR, str(e)
    messages.add_message(request, level, text)
    return HttpResponseRedirect(reverse("admin:dashboard"))
