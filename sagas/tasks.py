"""django-q2 entry points for the saga coordinator."""

from sagas import services


def run_saga(*, saga_id: int) -> str:
    return services.advance(saga_id=saga_id)


def recover_sagas() -> str:
    result = services.recover_sagas()
    return f"recovered {result.count} saga(s)"
