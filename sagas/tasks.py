"""django-q2 entry points for the saga coordinator and the choreographed services. A worker
holding several saga jobs at once runs them together (pgbroker.batching): their commits are
shared (sagas.batch)."""

from pgbroker.batching import batched
from sagas import choreography, coordinator, recovery, services

BATCH = 50  # sagas advanced together, at most


def run_sagas(calls: list[dict]) -> list[object]:
    outcomes = coordinator.advance_many(saga_ids=[c["saga_id"] for c in calls])
    return [o if isinstance(o, Exception) else str(o or recovery.HELD) for o in outcomes]


@batched(run_sagas, size=BATCH)
def run_saga(*, saga_id: int) -> str:
    return str(coordinator.advance(saga_id=saga_id) or recovery.HELD)


def react_many(calls: list[dict]) -> list[object]:
    return list(choreography.react_many(calls=calls))


@batched(react_many, size=BATCH)
def react(*, saga_id: int, service: str) -> str:
    """A choreographed saga's service reacting to the event addressed to it."""
    return choreography.react(saga_id=saga_id, service=service)


def recover_sagas() -> str:
    result = recovery.recover_sagas()
    states = ", ".join(f"saga {i} {s}" for i, s in result.advanced.items())
    return f"recovered {result.count} saga(s)" + (f" ({states})" if states else "")


def audit_sagas() -> str:
    return services.audit_sagas()
