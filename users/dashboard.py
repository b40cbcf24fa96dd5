"""What the users app brings to the dashboard: the signups panel, the email invariants, and
the signup and reconcile controls (registered by UsersConfig.ready)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages

from dashboard import registry
from dashboard.registry import Check, Snapshot, Status
from users import services
from users.forms import SignupForm
from users.models import Mode
from users.selectors import ModeStats, Verdict, signup_stats


def stats(snap: Snapshot):
    return snap.get("users.signups", signup_stats)


def email_checks(snap: Snapshot) -> list[Check]:
    signups = stats(snap)
    dual = [s for s in signups if s.mode == Mode.DUAL_WRITE]
    reliable = [s for s in signups if s.mode != Mode.DUAL_WRITE]

    def of(name: str, description: str, among: list[ModeStats], verdict: str,
           bad: Status) -> Check:
        attr = {Verdict.LOST: "lost", Verdict.DUPLICATED: "duplicated",
                Verdict.LOST_BY_STORE: "lost_by_store"}[verdict]
        return Check.of(name, description, [n for s in among for n in getattr(s, attr)], bad,
                        count=sum(s.count(verdict) for s in among))

    return [
        of("reliable_signups_lost_email",
           "outbox and que: every committed user gets exactly one welcome email",
           reliable, Verdict.LOST, Status.VIOLATION),
        of("emails_duplicated", "no user gets more than one welcome email",
           signups, Verdict.DUPLICATED, Status.VIOLATION),
        of("dual_write_lost_email",
           "dual-write: users whose welcome email was lost (the talk's anomaly)",
           dual, Verdict.LOST, Status.EXPECTED),
        of("outbox_lost_by_store",
           "outbox: published, then lost by Redis (reconcile publishes it again)",
           signups, Verdict.LOST_BY_STORE, Status.ATTENTION),
    ]


def signup(data: dict) -> tuple[int, str]:
    kind, _, part = (data["fault"] or "").partition(":")
    services.enqueue_signup(name=data["name"], mode=data["mode"],
                            fail=part if kind == "fail" else None,
                            crash=part if kind == "crash" else None)
    fault = f" with a {kind} in {part}" if kind else ""
    return messages.SUCCESS, f"Signup of {data['name']} ({data['mode']}) enqueued{fault}."


def reconcile(data: dict) -> tuple[int, str]:
    result = services.reconcile_welcome_emails(older_than=settings.RECONCILE_AFTER_SECONDS)
    return messages.SUCCESS, f"Reconciled: {result}."


def register() -> None:
    registry.register_checks("users", email_checks, order=10)
    registry.register_panel(registry.Panel(
        name="signups", template="admin/users/dashboard_signups.html", wide=True, order=10,
        context=lambda snap: {"signups": stats(snap)}))
    registry.register_control(registry.Control(
        name="signup", title="Sign up a user", run=signup, form=SignupForm, button="Sign up",
        initial=lambda: {"name": "matt", "mode": Mode.DUAL_WRITE}, order=10))
    registry.register_control(registry.Control(
        name="reconcile", title="", run=reconcile, button="Reconcile now", order=60,
        help="enqueue again what PostgreSQL promised and no store delivered (outbox and que; "
             f"older than {settings.RECONCILE_AFTER_SECONDS:g} s)"))
