"""django-q2 entry points: take ids and names, call one service, return something printable."""

from django.conf import settings

from jobs.services import run_job
from users import services


def create_user_job(*, name: str, mode: str, signup_id: str) -> str:
    def body() -> str:
        user = services.create_user(name=name, mode=mode)
        return f"created user {user.pk}" if user else "user already exists: nothing to do"

    return run_job(key=f"signup:{signup_id}", func=services.CREATE_USER_TASK,
                   kwargs={"name": name, "mode": mode, "signup_id": signup_id},
                   body=body, fault_scope=signup_id)


def send_welcome_email(*, user_id: int) -> str:
    def body() -> str:
        sent = services.send_welcome_email(user_id=user_id)
        return f"sent {sent.message_id}" if sent else "no such user"

    return run_job(key=services.email_job_key(user_id), func=services.SEND_EMAIL_TASK,
                   kwargs={"user_id": user_id}, body=body)


def reconcile_welcome_emails() -> str:
    return str(services.reconcile_welcome_emails(older_than=settings.RECONCILE_AFTER_SECONDS))


def audit_welcome_emails() -> str:
    return services.audit_welcome_emails()
