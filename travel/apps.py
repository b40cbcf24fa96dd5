from django.apps import AppConfig


class TravelConfig(AppConfig):
    name = "travel"
    verbose_name = "Travel services (hotel, car, flight)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # imported here, not at the top: apps.py is loaded before any app's models are
        from faults.points import register
        from travel.services import MODELS

        for service in MODELS:
            register(f"saga.{service}.book",
                     f"in the {service} service, right after a booking committed (the answer "
                     "is lost)")
            register(f"saga.{service}.cancel",
                     f"in the {service} service, before a cancellation (nothing is cancelled)")
            register(f"saga.{service}.cancelled",
                     f"in the {service} service, right after a cancellation committed (the "
                     "answer is lost)")
