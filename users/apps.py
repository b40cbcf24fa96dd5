from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "users"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from outbox import topics
        from users import services

        # The outbox mode's welcome email: relayed into Redis, as in the talk.
        topics.register(topics.Topic(
            name=services.WELCOME_TOPIC, task=services.SEND_EMAIL_TASK,
            store=services.EMAIL_STORE[services.Mode.OUTBOX], kwargs=services.welcome_kwargs,
            done=services.welcome_done, description="a new user's welcome email"))
