from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models.functions import Now


class Mode(models.TextChoices):
    DUAL_WRITE = "dual-write", "dual-write (commit, then enqueue)"
    OUTBOX = "outbox", "transactional outbox"
    QUE = "que", "Que-style transactional enqueue"


class User(AbstractUser):
    """The project's user model (AUTH_USER_MODEL from the first migration, as Django advises)."""

    signup_mode = models.CharField(
        max_length=20, choices=Mode.choices, blank=True, default="",
        help_text="How this user's signup wired its welcome email (empty: not a demo signup).",
    )
    # by the database's clock: reconciliation compares it on other hosts (common.db.db_now)
    date_joined = models.DateTimeField("date joined", db_default=Now())


class EmailSend(models.Model):
    """One welcome email actually handed to the mail backend.

    `key` is the idempotency key: the job inserts this row in the same transaction as the
    send, so a redelivered job finds it and sends nothing twice.
    """

    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="email_sends")
    key = models.CharField(max_length=100, unique=True)
    message_id = models.CharField(max_length=200)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-sent_at"]
        indexes = [models.Index(fields=["sent_at"], name="emailsend_sent_idx")]  # retention

    def __str__(self) -> str:
        return self.key
