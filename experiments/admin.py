from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from common.admin import ReadOnlyAdminMixin
from common.permissions import can_operate
from experiments import charts, services
from experiments.forms import StartForm
from experiments.models import Experiment, Status
from experiments.plan import MODES, Params, PlanError


@admin.register(Experiment)
class ExperimentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "preset", "seed", "status", "verdict", "started_at", "took",
                    "summary")
    list_filter = ("status", "preset", "passed")
    change_list_template = "admin/experiments/experiment/change_list.html"
    change_form_template = "admin/experiments/experiment/change_form.html"

    def has_delete_permission(self, request, obj=None) -> bool:
        return can_operate(request.user) and (obj is None or obj.status != Status.RUNNING)

    @admin.display(description="result")
    def verdict(self, obj: Experiment):
        if obj.passed is None:
            return f"{obj.phase} {obj.progress:.0%}" if obj.status == Status.RUNNING else "-"
        colour, text = ("#2e7d32", "targets met") if obj.passed else ("#ba2121",
                                                                     "targets missed")
        return format_html('<b style="color:{}">{}</b>', colour, text)

    @admin.display(description="took")
    def took(self, obj: Experiment) -> str:
        if obj.started_at and obj.finished_at:
            return f"{(obj.finished_at - obj.started_at).total_seconds():.0f} s"
        return "-"

    @admin.display(description="outcome")
    def summary(self, obj: Experiment) -> str:
        r = obj.result
        if not r:
            return obj.error.splitlines()[0] if obj.error else ""
        lost = ", ".join(f"{m} {v['lost']} lost" for m, v in r["modes"].items())
        return (f"{lost}; sagas {r['sagas']['completed']} completed, "
                f"{r['sagas']['compensated']} compensated, {r['sagas']['half_done']} half done; "
                f"{r['faults']['kills']} kills, {r['faults']['pg_restarts']} PG restarts")

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("start/", wrap(self.start_view), name="experiments_experiment_start"),
            path("<int:pk>/repeat/", wrap(self.repeat_view),
                 name="experiments_experiment_repeat"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        extra = {"start_form": StartForm(initial={"preset": "talk"}),
                 "can_start": self.has_operate_permission(request)}
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def change_view(self, request: HttpRequest, object_id, form_url="", extra_context=None):
        obj = get_object_or_404(Experiment, pk=object_id)
        extra = {"experiment": obj, "command": services.command_line(obj),
                 "params": Params.from_dict(obj.params).as_dict(),
                 "params_shown": [(k, v) for k, v in Params.from_dict(obj.params).as_dict()
                                  .items() if k != "script"],
                 "can_start": self.has_operate_permission(request)}
        if obj.result:
            extra["outcomes"] = charts.outcome_chart(obj.result)
            extra["dual_write_lost"] = obj.result["modes"]["dual-write"]["lost_explained"]
            extra["mode_rows"] = [(m, obj.result["modes"][m]) for m in MODES]
            styles = obj.result.get("sagas_by_style")  # runs before --style have none
            if styles:
                extra["style_rows"] = list(styles.items())
                extra["styles_chart"] = charts.style_chart(styles)
        if obj.samples:
            extra["throughput"] = charts.throughput_chart(obj.samples, obj.timeline)
        return super().change_view(request, object_id, form_url, {**extra,
                                                                  **(extra_context or {})})

    def start_view(self, request: HttpRequest):
        if request.method != "POST" or not self.has_operate_permission(request):
            raise PermissionDenied
        form = StartForm(request.POST)
        if not form.is_valid():
            errors = "; ".join(f"{k}: {' '.join(str(e) for e in v)}"
                               for k, v in form.errors.items())
            self.message_user(request, f"Not started: {errors}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:experiments_experiment_changelist"))
        data = form.cleaned_data
        return self._start(request, preset=data.pop("preset") or None, **data)

    def repeat_view(self, request: HttpRequest, pk: int):
        if request.method != "POST" or not self.has_operate_permission(request):
            raise PermissionDenied
        old = get_object_or_404(Experiment, pk=pk)
        params = Params.from_dict(old.params).as_dict()
        params.pop("script", None)
        return self._start(request, preset=old.preset or None, **params)

    def _start(self, request: HttpRequest, *, preset: str | None, **params):
        try:
            experiment = services.start_experiment(preset=preset, **params)
        except (PlanError, services.ExperimentError) as e:
            self.message_user(request, f"Not started: {e}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:experiments_experiment_changelist"))
        pid = services.launch(experiment)
        self.message_user(request, f"Experiment {experiment.pk} started (pid {pid}): "
                                   f"{services.command_line(experiment)}")
        return HttpResponseRedirect(reverse("admin:experiments_experiment_change",
                                            args=[experiment.pk]))
