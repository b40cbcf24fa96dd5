from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success
from django_q.tasks import async_task

from common.admin import (
    BigTableAdminMixin,
    ReadOnlyAdminMixin,
    SecondsAdminMixin,
    StateFilter,
    recent_values_filter,
)
from common.permissions import OperatorsEditAdminMixin
from jobs import services
from jobs.models import JobRun, RunState
from jobs.selectors import uses_pgbroker
from pgbroker import admin as pgbroker_admin
from pgbroker.models import Cluster, Job
from pgbroker.selectors import decode


class RunStateFilter(StateFilter):
    states = RunState


@admin.register(JobRun)
class JobRunAdmin(BigTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["key", "func", "state", "attempts", "last_pid", "last_started_at",
                    "finished_at", "parked_at", "short_error"]
    list_filter = [RunStateFilter, recent_values_filter("func", "func", newest="-created_at")]
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


# django-q2's own pages (its queue, schedules and results), with its list displays, but only
# operators (common.permissions) may add, change, delete or resubmit, whatever model
# permissions say: a schedule's `func` is any callable, and a resubmitted task runs again.

def _task_ids_in_queue() -> set[str]:
    """The django-q2 task ids that still have a job in the PostgreSQL queue (waiting, running,
    waiting for a retry or parked): the queue retries those itself."""
    if uses_pgbroker():
        packages = (decode(p) for p in Job.objects.values_list("payload", flat=True).iterator())
        return {p["id"] for p in packages if p and p.get("id") is not None}
    ids = set()
    for row in OrmQ.objects.all():
        try:
            ids.add(row.task_id())
        except Exception:  # a payload signed with another key: not ours to read
            continue
    return ids


@admin.action(description="Resubmit selected tasks to the queue", permissions=["operate"])
def resubmit_failed(modeladmin, request: HttpRequest, queryset) -> None:
    """Each failed task once: its row is locked, enqueued again and deleted in one transaction,
    so a double submit finds it gone. A task the queue still holds (retrying or parked) is
    left to the queue (retry parked jobs from the Jobs page)."""
    in_queue = _task_ids_in_queue()
    resubmitted, skipped = 0, 0
    with transaction.atomic():
        for task in queryset.select_for_update():
            if task.id in in_queue:
                skipped += 1
                continue
            async_task(task.func, *(task.args or ()), hook=task.hook, group=task.group,
                       cluster=task.cluster, **(task.kwargs or {}))
            task.delete()
            resubmitted += 1
    note = f"; {skipped} left alone: the queue still holds them" if skipped else ""
    modeladmin.message_user(request, f"Resubmitted {resubmitted} failed task(s){note}.")


@admin.action(description="Run selected tasks again (a new task each)", permissions=["operate"])
def run_again(modeladmin, request: HttpRequest, queryset) -> None:
    for task in queryset:
        async_task(task.func, *(task.args or ()), hook=task.hook, group=task.group,
                   cluster=task.cluster, **(task.kwargs or {}))
    modeladmin.message_user(request, f"Enqueued {queryset.count()} task(s) again.")


class ScheduleAdmin(OperatorsEditAdminMixin, SecondsAdminMixin, q_admin.ScheduleAdmin):
    pass


class SuccessAdmin(BigTableAdminMixin, OperatorsEditAdminMixin, SecondsAdminMixin,
                   q_admin.TaskAdmin):
    # django-q2's ("group", "cluster") read SELECT DISTINCT over every result at every page
    list_filter = [recent_values_filter("group", "group", newest="-stopped"),
                   recent_values_filter("cluster", "cluster", newest="-stopped")]
    allow_add = False
    actions = [run_again]


class FailureAdmin(BigTableAdminMixin, OperatorsEditAdminMixin, SecondsAdminMixin,
                   q_admin.FailAdmin):
    list_filter = SuccessAdmin.list_filter
    allow_add = False
    actions = [resubmit_failed]


class QueueAdmin(OperatorsEditAdminMixin, q_admin.QueueAdmin):
    allow_add = False


# pgbroker's own pages (its queue and its clusters), with this project's rules as every other
# log and queue page has them: times to the second, retry for operators (common.permissions).
# pgbroker, a package of its own, knows neither (its retry follows `pgbroker.change_job`).

class PgbrokerJobAdmin(ReadOnlyAdminMixin, pgbroker_admin.JobAdmin):
    pass


class PgbrokerClusterAdmin(ReadOnlyAdminMixin, pgbroker_admin.ClusterAdmin):
    pass


for model, model_admin in [(Schedule, ScheduleAdmin), (Success, SuccessAdmin),
                           (Failure, FailureAdmin), (OrmQ, QueueAdmin),
                           (Job, PgbrokerJobAdmin), (Cluster, PgbrokerClusterAdmin)]:
    if admin.site.is_registered(model):  # as django-q2 and pgbroker registered them
        admin.site.unregister(model)
        admin.site.register(model, model_admin)
