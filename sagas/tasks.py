"""django-q2 entry points for the saga coordinator."""

from sagas import choreography, coordinator, recovery, services


def run_saga(*, saga_id: int) -> str:
    return str(coordinator.advance(saga_id=saga_id) or recovery.HELD)


def react(*, saga_id: int, service: str) -> str:
    """A choreographed saga's service reacting to the event addressed to it."""
    return choreography.react(saga_id=saga_id, service=service)


def recover_sagas() -> str:
    result = recovery.recover_sagas()
    states = ", ".join(f"saga {i} {s}" for i, s in result.advanced.items())
    return f"recovered {result.count} saga(s)" + (f" ({states})" if states else "")


def audit_sagas() -> str:
    return services.audit_sagas()
