from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from common.admin import BigTableAdminMixin, ReadOnlyAdminMixin, to_the_second
from common.errors import OperationError
from common.permissions import can_operate
from jobs.cluster import run_now
from sagas import recovery, services
from sagas.forms import StartTripForm
from sagas.models import Saga, SagaLog, State, Style
from sagas.timeline import timeline
from travel.services import MODELS


def elapsed(at, saga: Saga) -> str:
    """Seconds since the saga started, to the millisecond: the 1-2-4-8 s backoff shows."""
    return f"+{(at - saga.created_at).total_seconds():.3f} s"


class SagaLogInline(admin.TabularInline):
    model = SagaLog
    fields = ("seq", "event", "step", "detail", "pid", "at_second", "since_start")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["seq"]

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="at")
    def at_second(self, obj: SagaLog) -> str:
        return to_the_second(obj.at) + obj.at.strftime(".%f")[:4]

    @admin.display(description="since the start")
    def since_start(self, obj: SagaLog) -> str:
        return elapsed(obj.at, obj.saga)


@admin.register(Saga)
class SagaAdmin(BigTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "kind", "style", "customer", "colored_state", "bookings",
                    "lease_until", "created_at"]
    list_filter = ["state", "style", "kind"]
    search_fields = ["id", "payload__customer"]
    readonly_fields = ["kind", "style", "state", "payload", "fault_scope", "lease_until",
                       "retry_from_seq", "created_at", "updated_at"]
    inlines = [SagaLogInline]
    actions = ["retry_stuck", "recover_now"]
    change_form_template = "admin/sagas/saga/change_form.html"
    change_list_template = "admin/sagas/saga/change_list.html"

    @admin.display(description="customer")
    def customer(self, obj: Saga) -> str:
        return obj.payload.get("customer", "")

    @admin.display(description="state", ordering="state")
    def colored_state(self, obj: Saga):
        colors: dict[str, str] = {State.COMPLETED: "#2e7d32", State.COMPENSATED: "#ef6c00",
                                  State.STUCK: "#c62828"}
        color = colors.get(obj.state, "#1565c0")
        return format_html('<b style="color:{}">{}</b>', color, obj.state)

    def get_queryset(self, request: HttpRequest):
        # each booking's status as a subquery: read for the page's rows only, in one query
        return super().get_queryset(request).annotate(**{
            f"_{service}": Subquery(model.objects.filter(saga_id=OuterRef("pk"))
                                    .order_by().values("status")[:1])
            for service, model in MODELS.items()})

    @admin.display(description="bookings")
    def bookings(self, obj: Saga) -> str:
        return ", ".join(f"{service} {getattr(obj, f'_{service}', None) or 'none'}"
                         for service in MODELS)

    @admin.action(description="Retry selected stuck sagas", permissions=["operate"])
    def retry_stuck(self, request: HttpRequest, queryset) -> None:
        retried = 0
        for saga in queryset.filter(state=State.STUCK):
            try:
                recovery.retry_stuck(saga=saga)
            except services.SagaError:  # no longer stuck: someone retried it meanwhile
                continue
            retried += 1
        self.message_user(request, f"Retrying {retried} stuck saga(s).")

    @admin.action(description="Recover sagas now (every one whose lease ran out)",
                  permissions=["operate"])
    def recover_now(self, request: HttpRequest, queryset) -> None:
        self._recover(request)

    def _recover(self, request: HttpRequest) -> None:
        level, text = run_now("sagas.tasks.recover_sagas", "Saga recovery")
        self.message_user(request, text, level)

    def get_urls(self):
        return [
            path("start/", self.admin_site.admin_view(self.start_view), name="sagas_saga_start"),
            path("recover/", self.admin_site.admin_view(self.recover_view),
                 name="sagas_saga_recover"),
            *super().get_urls(),
        ]

    def start_view(self, request: HttpRequest):
        if not can_operate(request.user):
            raise PermissionDenied
        form = StartTripForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                saga = services.start_trip(
                    customer=form.cleaned_data["customer"],
                    fail=form.cleaned_data["fail"] or None,
                    crash=form.cleaned_data["crash"] or None,
                    style=form.cleaned_data["style"] or Style.ORCHESTRATED)
            except OperationError as e:
                form.add_error(None, str(e))
            else:
                self.message_user(request, f"Trip saga {saga.pk} started ({saga.style}).")
                return HttpResponseRedirect(reverse("admin:sagas_saga_change", args=[saga.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "form": form, "title": "Start a trip saga"}
        return TemplateResponse(request, "admin/sagas/saga/start.html", context)

    def recover_view(self, request: HttpRequest):
        if request.method != "POST" or not can_operate(request.user):
            raise PermissionDenied
        self._recover(request)
        return HttpResponseRedirect(reverse("admin:sagas_saga_changelist"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        saga = self.get_object(request, object_id)  # None for a bad or unknown id
        extra = dict(extra_context or {})
        if saga is not None:
            drawn = timeline(saga)
            # a running saga may have logged more since the drawing: those wait for the next
            times = saga.log.order_by("seq").values_list("at", flat=True)
            extra.update(timeline=drawn, saga=saga,
                         clock=[{"y": a.y, "at": a.at, "elapsed": elapsed(at, saga)}
                                for a, at in zip(drawn["arrows"], times, strict=False)])
        return super().change_view(request, object_id, form_url, extra)
