from django.apps import AppConfig


class ThrowawayConfig(AppConfig):
    name = "tests.throwaway"
    label = "throwaway"

    def ready(self) -> None:
        from dashboard import registry
        from faults.points import register as register_point
        from jobs.queues import Store
        from outbox import topics
        from tests.throwaway import greetings

        topics.register(topics.Topic(
            name=greetings.TOPIC, task="tests.throwaway.greetings.greet", store=Store.POSTGRES,
            kwargs=greetings.greet_kwargs, description="a greeting written to a file"))
        register_point(greetings.POINT, "in the greeting job, before the file is written")
        registry.register_checks("throwaway", greetings.checks, order=99)
        registry.register_panel(registry.Panel(
            name="greetings", template="throwaway/panel.html", order=99,
            context=lambda snap: {"unanswered": greetings.unanswered()}))
