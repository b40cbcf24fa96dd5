"""The dashboard: every mechanism on one admin page, and the controls to break them.

Views are thin: reads come from dashboard.selectors, every control calls the same service
function as the matching command."""

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard.forms import FaultForm, RedisForm, SignupForm, TripForm
from dashboard.selectors import dashboard_state
from faults import services as faults
from faults import stores
from jobs.services import run_on_cluster
from outbox import services as outbox
from sagas import services as sagas
from users import services as users


def _context(request: HttpRequest) -> dict:
    return {**admin.site.each_context(request), **dashboard_state(),
            "title": "Dashboard", "can_experiment": request.user.is_superuser}


def dashboard(request: HttpRequest) -> HttpResponse:
    context = _context(request)
    context.update(signup_form=SignupForm(initial={"name": "matt", "mode": "dual-write"}),
                   fault_form=FaultForm(initial={"point": "signup.part2", "action": "raise",
                                                 "times": 3}),
                   trip_form=TripForm(initial={"customer": "alice", "fail": "car"}),
                   redis_form=RedisForm(initial={"action": stores.Action.STOP}),
                   reconcile_after=settings.RECONCILE_AFTER_SECONDS)
    return TemplateResponse(request, "admin/dashboard/dashboard.html", context)


def panels(request: HttpRequest) -> HttpResponse:
    """The live part of the page, fetched every couple of seconds."""
    return TemplateResponse(request, "admin/dashboard/_panels.html", _context(request))


@require_POST
def control(request: HttpRequest, action: str) -> HttpResponse:
    if not request.user.is_superuser:
        raise PermissionDenied
    handler = CONTROLS.get(action)
    if handler is None:
        raise PermissionDenied
    try:
        level, text = handler(request)
    except (users.SignupError, faults.FaultError, outbox.OutboxError, sagas.SagaError) as e:
        level, text = messages.ERROR, str(e)
    messages.add_message(request, level, text)
    return HttpResponseRedirect(reverse("admin:dashboard"))


def _invalid(form) -> tuple[int, str]:
    errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
    return messages.ERROR, f"Not done: {errors}"


def _signup(request: HttpRequest) -> tuple[int, str]:
    form = SignupForm(request.POST)
    if not form.is_valid():
        return _invalid(form)
    kind, _, part = (form.cleaned_data["fault"] or "").partition(":")
    users.enqueue_signup(name=form.cleaned_data["name"], mode=form.cleaned_data["mode"],
                         fail=part if kind == "fail" else None,
                         crash=part if kind == "crash" else None)
    fault = f" with a {kind} in {part}" if kind else ""
    return messages.SUCCESS, (f"Signup of {form.cleaned_data['name']} "
                              f"({form.cleaned_data['mode']}) enqueued{fault}.")


def _fault(request: HttpRequest) -> tuple[int, str]:
    form = FaultForm(request.POST)
    if not form.is_valid():
        return _invalid(form)
    point, action = form.cleaned_data["point"], form.cleaned_data["action"]
    if action == "disarm":
        was = faults.disarm(point=point)
        return messages.SUCCESS, f"Disarmed {point}." if was else f"{point} was not armed."
    times = form.cleaned_data["times"]
    faults.arm(point=point, action=action, times=times,
               delay_ms=form.cleaned_data["ms"] or 2000)
    return messages.WARNING, (f"Armed {point}: {action}, "
                              f"{'every time' if times is None else f'{times} time(s)'}.")


def _on_cluster(func: str, what: str) -> tuple[int, str]:
    run = run_on_cluster(func)
    if not run.done:
        return messages.WARNING, (f"{what}: queued, but no cluster answered in time "
                                  "(is `make run` running?). It runs when one does.")
    if not run.ok:
        first_line = str(run.result).strip().splitlines()[0] if run.result else "unknown error"
        return messages.ERROR, f"{what} failed on the cluster: {first_line}"
    return messages.SUCCESS, f"{what}: {run.result}."


def _relay(request: HttpRequest) -> tuple[int, str]:
    return _on_cluster("outbox.tasks.relay_outbox", "Relayed the outbox")


def _trip(request: HttpRequest) -> tuple[int, str]:
    form = TripForm(request.POST)
    if not form.is_valid():
        return _invalid(form)
    saga = sagas.start_trip(customer=form.cleaned_data["customer"],
                            fail=form.cleaned_data["fail"] or None,
                            crash=form.cleaned_data["crash"] or None)
    return messages.SUCCESS, f"Trip saga {saga.pk} started."


def _recover(request: HttpRequest) -> tuple[int, str]:
    return _on_cluster("sagas.tasks.recover_sagas", "Saga recovery")


def _redis(request: HttpRequest) -> tuple[int, str]:
    form = RedisForm(request.POST)
    if not form.is_valid():
        return _invalid(form)
    return messages.WARNING, stores.act(action=form.cleaned_data["action"]) + "."


def _reconcile(request: HttpRequest) -> tuple[int, str]:
    result = users.reconcile_welcome_emails(older_than=settings.RECONCILE_AFTER_SECONDS)
    return messages.SUCCESS, f"Reconciled: {result}."


CONTROLS = {"signup": _signup, "fault": _fault, "relay": _relay, "trip": _trip,
            "recover": _recover, "redis": _redis, "reconcile": _reconcile}
