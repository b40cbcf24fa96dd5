from django.apps import AppConfig


class TravelConfig(AppConfig):
    name = "travel"
    verbose_name = "Travel services (hotel, car, flight)"
    default_auto_field = "django.db.models.BigAutoField"
