"""The welcome email's wiring, shared by services (which send it) and selectors (which read
whether it went): its task, its outbox topic, where each mode's job goes, its job's key in the
job ledger. Selectors import nothing from services."""

from jobs.queues import Store
from users.models import Mode

SEND_EMAIL_TASK = "users.tasks.send_welcome_email"
WELCOME_TOPIC = "user.welcome_email"

# Where each mode's welcome email job goes: the talk's two stores.
EMAIL_STORE = {Mode.DUAL_WRITE: Store.REDIS, Mode.OUTBOX: Store.REDIS, Mode.QUE: Store.POSTGRES}


def email_job_key(user_id: int) -> str:
    """The job ledger's key (jobs.JobRun) of one user's welcome email job."""
    return f"email:{user_id}"
