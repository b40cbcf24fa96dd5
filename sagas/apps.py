from django.apps import AppConfig


class SagasConfig(AppConfig):
    name = "sagas"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # imported here, not at the top: apps.py is loaded before any app's models are
        from faults.points import register
        from pgbroker import scheduler as schedules
        from retention import registry as retention
        from sagas import choreography, dashboard, services
        from sagas.definitions import DEFINITIONS
        from sagas.models import Saga

        # the coordinator, right after a log event committed: every boundary of the log
        for definition in DEFINITIONS.values():
            for step in definition.steps:
                register(f"saga.after.STEP_START.{step.name}",
                         f"in the saga coordinator (or the {step.name} service's reaction), "
                         f"after STEP_START {step.name} committed, before the call")
                register(f"saga.after.COMP_START.{step.name}",
                         f"in the saga coordinator (or the {step.name} service's reaction), "
                         f"after COMP_START {step.name} committed, before the call")
        register("saga.after.SAGA_ABORT",
                 "in the saga coordinator (or the failing service's reaction), after "
                 "SAGA_ABORT committed, before any compensation")
        choreography.register_topics()
        dashboard.register()
        # The backstop for sagas whose coordinator died when no `recover_sagas --follow` runs.
        schedules.register("recover sagas", "sagas.tasks.recover_sagas", minutes=1)
        schedules.register("audit sagas", "sagas.tasks.audit_sagas", minutes=1)
        retention.register(retention.Rule(
            name="sagas_finished", label="finished sagas (with their logs and bookings)",
            days="sagas_finished", queryset=lambda: Saga.objects.finished(),
            age_field="updated_at", delete=services.prune_finished_sagas, order=40))
