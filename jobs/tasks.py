"""django-q2 entry points."""

from retention import services


def cleanup_task_results() -> str:
    """The daily schedule of earlier versions (jobs migration 0002): now one rule of `prune`,
    which the "prune" schedule runs every 10 minutes."""
    (outcome,) = services.prune(only=["job_results"])
    return f"pruned {outcome.deleted} job results"
