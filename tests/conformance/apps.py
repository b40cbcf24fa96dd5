import os

from django.apps import AppConfig


class ConformanceConfig(AppConfig):
    """Only in the clusters the conformance suite starts (tests/conformance/settings.py)."""

    name = "tests.conformance"
    label = "conformance"

    def ready(self) -> None:
        # Only on request: a post_execute receiver sends every result down pgbroker's slower
        # path (django-q2's save_task), so the other clusters run without one.
        if os.environ.get("CONFORMANCE_SIGNALS") == "1":
            from tests.conformance import tasks

            tasks.connect_signals()
