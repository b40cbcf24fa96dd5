from django.apps import AppConfig


class FaultsConfig(AppConfig):
    name = "faults"
    verbose_name = "Fault injection"
    default_auto_field = "django.db.models.BigAutoField"
