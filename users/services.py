"""Signup and the welcome email, in the talk's three wirings."""

from __future__ import annotations

import logging
import uuid

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.db import transaction
from django_q.tasks import async_task

from faults import services as faults
from faults.models import Action
from outbox.services import publish
from users.models import EmailSend, Mode, User

logger = logging.getLogger(__name__)

SEND_EMAIL_TASK = "users.tasks.send_welcome_email"
CREATE_USER_TASK = "users.tasks.create_user_job"
WELCOME_TOPIC = "user.welcome_email"
NAME_MAX = 150

NAME_EMPTY = "the name is empty"
NAME_TOO_LONG = f"the name is longer than {NAME_MAX} characters"
NAME_INVALID = "the name may contain only letters, digits and @ . + - _"
NAME_TAKEN = "a user named {name!r} already exists"
UNKNOWN_MODE = "unknown mode {mode!r}; use one of: {modes}"
SAME_PART = "--fail and --crash cannot both target {part}"
UNKNOWN_PART = "unknown part {part!r}; use part1 or part2"


class SignupError(Exception):
    """A signup request that cannot be honoured; nothing was written."""


class InvalidName(SignupError):
    pass


class NameTaken(SignupError):
    pass


def check_mode(mode: str) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise SignupError(UNKNOWN_MODE.format(mode=mode, modes=", ".join(Mode.values))) from None


def validate_name(name: str) -> str:
    """The name as it will be stored, or a SignupError saying what is wrong with it."""
    # As Django stores it (NFKC): "ｍｉｋｅ" is "mike", and must be refused as taken.
    name = User.normalize_username((name or "").strip())
    if not name:
        raise InvalidName(NAME_EMPTY)
    if len(name) > NAME_MAX:
        raise InvalidName(NAME_TOO_LONG)
    try:
        UnicodeUsernameValidator()(name)
    except ValidationError:
        raise InvalidName(NAME_INVALID) from None
    if User.objects.filter(username=name).exists():
        raise NameTaken(NAME_TAKEN.format(name=name))
    return name


def create_user(*, name: str, mode: Mode | str) -> User | None:
    """The create-user job body, wired the way `mode` says (DESIGN.md, "three signup modes").

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
        # The naive code from the talk, on purpose: a second write after the commit. A crash
        # or error between the commit and this line loses the email.
        async_task(SEND_EMAIL_TASK, user_id=user.pk)
    elif mode == Mode.OUTBOX:
        with transaction.atomic():
            user = User.objects.create_user(username=name, signup_mode=mode)
            publish(topic=WELCOME_TOPIC, payload={"user_id": user.pk})
            faults.fire("signup.part1")
        faults.fire("signup.part2")
    else:  # Mode.QUE: the job row is an INSERT in this very transaction
        with transaction.atomic():
            user = User.objects.create_user(username=name, signup_mode=mode)
            async_task(SEND_EMAIL_TASK, user_id=user.pk)
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
    travels with the job, so other signups are not hit and this one's retry runs clean.
    """
    mode = check_mode(mode)
    name = validate_name(name)
    plan = _signup_faults(fail=fail, crash=crash)
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
        async_task(CREATE_USER_TASK, name=name, mode=mode.value, signup_id=signup_id,
                   task_name=f"signup {name} ({mode.value})")
    return signup_id


def _signup_faults(*, fail: str | None, crash: str | None) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for part, action in ((fail, Action.RAISE), (crash, Action.CRASH)):
        if part is None:
            continue
        if part not in ("part1", "part2"):
            raise SignupError(UNKNOWN_PART.format(part=part))
        point = f"signup.{part}"
        if point in chosen:
            raise SignupError(SAME_PART.format(part=part))
        chosen[point] = action
    return chosen
