"""Signup and the welcome email, in the talk's three wirings."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.db import transaction

from common import validate
from common.db import db_now
from common.errors import OperationError
from dashboard import audit
from faults import services as faults
from jobs.models import JobRun
from jobs.queues import RedisUnavailable, Store, enqueue
from outbox.services import publish, reconcile
from outbox.topics import PermanentError
from users.models import EmailSend, Mode, User
from users.selectors import AUDIT, recheck_findings, settled, users_with_email_job
from users.welcome import EMAIL_STORE, SEND_EMAIL_TASK, WELCOME_TOPIC, email_job_key

logger = logging.getLogger(__name__)

CREATE_USER_TASK = "users.tasks.create_user_job"
NAME_MAX = 150

NAME_EMPTY = "the name is empty"
NAME_TOO_LONG = f"the name is longer than {NAME_MAX} characters"
NAME_INVALID = "the name may contain only letters, digits and @ . + - _"
NAME_TAKEN = "a user named {name!r} already exists"
UNKNOWN_MODE = "unknown mode {mode}; use one of: {modes}"
SIGNUP_PARTS = ("part1", "part2")  # part 1: inside the signup transaction; part 2: after it
ONE_FAULT = ("a signup takes one fault: the {first} in {first_part} ends its first attempt, so "
             "the {second} in {second_part} could strike only a retry (never without the "
             "cluster)")
EMAIL_LOST = ("user {name} is committed, but Redis refused the welcome email job: the email is "
              "lost (dual-write: {error})")


class SignupError(OperationError):
    """A signup request that cannot be honoured; nothing was written."""


class InvalidName(SignupError, validate.Invalid):
    pass


class NameTaken(SignupError):
    pass


class EmailLost(Exception):
    """dual-write: the user committed, the email job never reached Redis."""


def check_mode(mode: str) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise SignupError(UNKNOWN_MODE.format(mode=validate.shown(mode),
                                              modes=", ".join(Mode.values))) from None


def parse_name(name: object) -> str:
    """A user name as it will be stored (no database read: `create_user NAME`, `demo_superuser
    --username` and the signup form parse with it), or InvalidName saying what is wrong."""
    try:
        name = validate.text(name, what="the name", max_length=NAME_MAX)
    except validate.Invalid as e:
        raise InvalidName(str(e)) from None
    # As Django stores it (NFKC): "ｍｉｋｅ" is "mike", and must be refused as taken. NFKC can
    # make a name longer ("ﷺ" is 18 characters): measure again.
    name = User.normalize_username(name)
    if len(name) > NAME_MAX:
        raise InvalidName(NAME_TOO_LONG)
    try:
        UnicodeUsernameValidator()(name)
    except ValidationError:
        raise InvalidName(NAME_INVALID) from None
    return name


def parse_wait(value: object) -> float:
    """`create_user --sync --wait`: seconds, 0 to 300."""
    return validate.seconds(value, what="the wait", low=0, high=300)


def validate_name(name: str) -> str:
    """The name as it will be stored, or a SignupError saying what is wrong with it."""
    name = parse_name(name)
    if User.objects.filter(username=name).exists():
        raise NameTaken(NAME_TAKEN.format(name=name))
    return name


def create_user(*, name: str, mode: Mode | str) -> User | None:
    """The create-user job body, wired the way `mode` says (docs/design.md, signup modes).

    Returns the new user, or None when a user with this name already exists: that is a retry
    of a signup whose transaction committed, and the job has nothing left to do. In the
    dual-write mode that is exactly how the welcome email gets lost.
    """
    mode = check_mode(mode)
    name = User.normalize_username(name)
    if User.objects.filter(username=name).exists():
        logger.warning("user %s already exists: this signup is done, giving up", name)
        return None
    if mode == Mode.DUAL_WRITE:
        with transaction.atomic():
            user = User.objects.create_user(username=name, signup_mode=mode)
            faults.fire("signup.part1")
        faults.fire("signup.part2")
        # The naive code from the talk, on purpose: a second write, to a second store, after
        # the commit. A crash or error between the commit and this line, or a Redis that is
        # down, loses the email.
        try:
            enqueue(store=EMAIL_STORE[mode], func=SEND_EMAIL_TASK, user_id=user.pk)
        except RedisUnavailable as e:
            raise EmailLost(EMAIL_LOST.format(name=name, error=e)) from e
    elif mode == Mode.OUTBOX:
        with transaction.atomic():
            user = User.objects.create_user(username=name, signup_mode=mode)
            publish(topic=WELCOME_TOPIC, payload={"user_id": user.pk})
            faults.fire("signup.part1")
        faults.fire("signup.part2")
    else:  # Mode.QUE: the job row is an INSERT in this very transaction
        with transaction.atomic():
            user = User.objects.create_user(username=name, signup_mode=mode)
            enqueue(store=EMAIL_STORE[mode], func=SEND_EMAIL_TASK, user_id=user.pk)
            faults.fire("signup.part1")
        faults.fire("signup.part2")
    return user


def welcome_key(user_id: int) -> str:
    return f"welcome-{user_id}"


def send_welcome_email(*, user_id: int) -> EmailSend | None:
    """Send the welcome email once per user, however often the job is delivered.

    The EmailSend row (unique key) and the send share one transaction; the user row is locked
    first, so concurrent duplicates queue behind each other and find the row. The one gap:
    a crash after the mail backend accepted the message and before the commit sends it again
    on redelivery; its Message-ID is derived from the key, so a receiver can drop the copy.
    """
    key = welcome_key(user_id)
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=user_id).first()
        if user is None:
            logger.error("welcome email for user %s: no such user, nothing sent", user_id)
            return None
        existing = EmailSend.objects.filter(key=key).first()
        if existing is not None:
            logger.info("welcome email %s already sent: duplicate delivery ignored", key)
            return existing
        message_id = f"<{key}@reliable.example>"
        sent = EmailSend.objects.create(user=user, key=key, message_id=message_id)
        EmailMessage(
            subject=f"Welcome, {user.username}!",
            body=f"Hello {user.username}, your account is ready.\n",
            to=[user.email or f"{user.username}@example.com"],
            headers={"Message-ID": message_id},
        ).send()
        faults.fire("email.send")
    return sent


def prepare_signup(
    *, name: str, mode: Mode | str, fail: str | None = None, crash: str | None = None
) -> tuple[str, Mode, str]:
    """Validate a signup request and arm its own faults; returns (name, mode, signup id).

    `fail`/`crash` ("part1"/"part2") arm that fault for this signup only, once: the fault
    travels with the job, so other signups are not hit and this one's retry runs clean. One
    fault per signup: a failure ends the attempt it strikes (part 1's rolls it back), so a
    second fault would strike only the retry, or never with `--sync`.
    """
    mode = check_mode(mode)
    name = validate_name(name)
    plan = faults.plan(point="signup.{target}", what="part", allowed=SIGNUP_PARTS,
                       fail=fail, crash=crash)
    if fail and crash:  # on different parts (plan() refused the same one)
        first, second = sorted([("failure", fail), ("crash", crash)],
                               key=lambda f: SIGNUP_PARTS.index(f[1]))
        raise SignupError(ONE_FAULT.format(first=first[0], first_part=first[1],
                                           second=second[0], second_part=second[1]))
    signup_id = uuid.uuid4().hex
    for point, action in plan.items():
        faults.arm(point=point, action=action, times=1, scope=signup_id)
    return name, mode, signup_id


def enqueue_signup(
    *, name: str, mode: Mode | str, fail: str | None = None, crash: str | None = None
) -> str:
    """Validate, then enqueue the create-user job on the cluster; returns the signup id."""
    name, mode, signup_id = prepare_signup(name=name, mode=mode, fail=fail, crash=crash)
    with transaction.atomic():
        enqueue(store=Store.POSTGRES, func=CREATE_USER_TASK, name=name, mode=mode.value,
                signup_id=signup_id, task_name=f"signup {name} ({mode.value})")
    return signup_id


# --- the welcome email as an outbox topic, and reconciliation ---------------------------------


def welcome_kwargs(payload: dict) -> dict:
    """The outbox message's payload -> the email job's kwargs (PermanentError if it never can)."""
    user_id = payload.get("user_id") if isinstance(payload, dict) else None
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        # shown(): a payload's repr can be huge, or fail (an int of more than 4300 digits)
        raise PermanentError("payload needs a positive integer user_id, got "
                             f"{validate.shown(payload, 200)}")
    return {"user_id": user_id}


def welcome_done(payloads: list[dict], *, older_than: float) -> list[bool]:
    """For each payload: is nothing left to do (its user's welcome email was sent, or there is
    no such user), or is its job running right now (a job taken off Redis is in a worker's
    hands only: its ledger row, written before the send, says so), started less than
    `older_than` seconds ago?"""
    ids = [p.get("user_id") if isinstance(p, dict) else None for p in payloads]
    known = [i for i in ids if isinstance(i, int)]
    waiting = set(User.objects.filter(pk__in=known, email_sends__isnull=True)
                  .values_list("pk", flat=True))
    recent = db_now() - timedelta(seconds=older_than)
    running = set(JobRun.objects.pending().filter(
        key__in=[email_job_key(i) for i in waiting], last_started_at__gte=recent)
        .values_list("key", flat=True))
    return [i not in waiting or email_job_key(i) in running for i in ids]


@dataclass
class Reconciled:
    republished: int = 0   # outbox: published, never done (a store lost the job): again
    reenqueued: int = 0    # que: committed, no email, no job: enqueued again

    def __str__(self) -> str:
        return (f"outbox messages published again: {self.republished}; "
                f"que email jobs enqueued again: {self.reenqueued}")


OLDER_THAN: dict[str, Any] = {"what": "the age", "low": 0, "high": 365 * validate.DAY}


def reconcile_welcome_emails(*, older_than: float) -> Reconciled:
    """What PostgreSQL says was promised but never done, `older_than` seconds on (and within
    RECONCILE_WINDOW_DAYS): the outbox
    messages whose job a store lost are published again, que users with no email and no job
    get their job again. dual-write users are not touched: their loss is the demonstration.
    The email ledger makes a copy that was not lost after all harmless."""
    older_than = validate.seconds(older_than, **OLDER_THAN)
    result = Reconciled(republished=reconcile(topic=WELCOME_TOPIC, older_than=older_than))
    cutoff = db_now() - timedelta(seconds=older_than)
    queued = users_with_email_job(include_parked=True)
    parked = set(JobRun.objects.parked().values_list("key", flat=True))
    # Within the window only: the cost of a pass is what the last day cost, and a user older
    # than the email ledger's retention would look unsent (REDELIVERY_HORIZON_DAYS).
    since = cutoff - timedelta(days=settings.RECONCILE_WINDOW_DAYS)
    orphans = (User.objects.filter(signup_mode=Mode.QUE, date_joined__lt=cutoff,
                                   date_joined__gte=since, email_sends__isnull=True)
               .values_list("pk", flat=True))
    for user_id in orphans:
        if user_id in queued or email_job_key(user_id) in parked:
            continue
        with transaction.atomic():
            enqueue(store=EMAIL_STORE[Mode.QUE], func=SEND_EMAIL_TASK, user_id=user_id)
        result.reenqueued += 1
        logger.warning("que user %s had no welcome email and no job: enqueued it again", user_id)
    return result


def audit_welcome_emails() -> str:
    """The audit's pass (every minute): move its watermark over the users that settled, keep
    what was not sent as findings, forget the findings sent since (dashboard.audit)."""
    moved = audit.advance(AUDIT, settled=settled)
    forgotten = audit.forget(AUDIT, recheck_findings())
    return f"audit of welcome emails: moved {moved} ids, {forgotten} finding(s) ok now"
