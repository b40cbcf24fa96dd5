from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Metrics to scrape (/metrics) and health probes (/healthz/*, `manage.py health`)."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from ops import checks  # noqa: F401 (registers the system checks)
