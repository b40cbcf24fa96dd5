from django.apps import AppConfig


class PgBrokerConfig(AppConfig):
    """A PostgreSQL-native broker and cluster for django-q2 (see pgbroker/cluster.py)."""

    name = "pgbroker"
    verbose_name = "PostgreSQL job queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pgbroker import checks  # noqa: F401 (registers the system checks)
