from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Experiments"

    def ready(self) -> None:
        from experiments import services
        from experiments.models import Experiment
        from retention import registry as retention

        retention.register(retention.Rule(
            name="experiments", label="finished experiments (and their logs)",
            days="experiments", queryset=lambda: Experiment.objects.filter(
                finished_at__isnull=False), age_field="finished_at",
            delete=services.prune_experiments, order=50))
