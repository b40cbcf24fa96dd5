from django.apps import AppConfig


class FaultsConfig(AppConfig):
    name = "faults"
    verbose_name = "Fault injection"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models import Q

        from faults.models import Fault
        from retention import registry as retention

        # one row per signup or saga armed with its own fault: gone once spent and old
        retention.register(retention.Rule(
            name="faults_spent", label="spent per-job faults", days="faults_spent",
            queryset=lambda: Fault.objects.exclude(scope="").filter(
                Q(action="") | Q(remaining=0)), age_field="armed_at", order=60))
