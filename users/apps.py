from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "users"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # imported here, not at the top: apps.py is loaded before any app's models are
        from faults.points import register
        from outbox import topics
        from pgbroker import scheduler as schedules
        from retention import registry as retention
        from users import dashboard, selectors, services
        from users.models import EmailSend

        register("signup.part1",
                 "inside the signup transaction, after the user row (and its outbox row or "
                 "job) is written: the transaction rolls back")
        register("signup.part2",
                 "after the signup transaction committed, before anything else happens (the "
                 "dual-write mode has not enqueued the email job yet)")
        register("email.send",
                 "inside the welcome email job, after the mail is handed over, before the "
                 "EmailSend row commits")

        # The outbox mode's welcome email: relayed into Redis, as in the talk.
        topics.register(topics.Topic(
            name=services.WELCOME_TOPIC, task=services.SEND_EMAIL_TASK,
            store=services.EMAIL_STORE[services.Mode.OUTBOX], kwargs=services.welcome_kwargs,
            done=services.welcome_done, description="a new user's welcome email"))
        dashboard.register()
        schedules.register("reconcile welcome emails", "users.tasks.reconcile_welcome_emails",
                           minutes=1)
        schedules.register("audit welcome emails", "users.tasks.audit_welcome_emails",
                           minutes=1)
        retention.register(retention.Rule(
            name="email_ledger", label="sent welcome emails (the email ledger)",
            days="email_ledger", queryset=lambda: EmailSend.objects.all(), age_field="sent_at",
            keep=selectors.prunable_sends, order=30))
