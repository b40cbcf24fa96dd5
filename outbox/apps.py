from django.apps import AppConfig


class OutboxConfig(AppConfig):
    name = "outbox"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # imported here, not at the top: apps.py is loaded before any app's models are
        from faults.points import register
        from outbox.models import OutboxMessage, RelayAttempt
        from pgbroker import scheduler as schedules
        from retention import registry as retention

        register("relay.publish",
                 "in the outbox relay, after claiming a batch, before any message is handled")
        register("relay.message",
                 "in the outbox relay, before one message is handled (arm it with the "
                 "message's id as scope for a poison message)")
        register("relay.redis_accepted",
                 "in the outbox relay, after Redis accepted the batch's jobs, before "
                 "PostgreSQL commits their messages as published (a crash here publishes "
                 "them again)")
        # The backstop for when no `relay_outbox --follow` runs: the cluster relays once a
        # minute (created again by the cluster if someone deletes it).
        schedules.register("relay outbox", "outbox.tasks.relay_outbox", minutes=1)
        retention.register(retention.Rule(
            name="outbox_published", label="published outbox messages",
            days="outbox_published", queryset=lambda: OutboxMessage.objects.published(),
            age_field="published_at", order=10))
        retention.register(retention.Rule(
            name="relay_attempts", label="relay attempts", days="relay_attempts",
            queryset=lambda: RelayAttempt.objects.all(), age_field="last_at", order=11))
