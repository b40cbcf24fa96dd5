"""django-q2 entry points for housekeeping."""

from jobs import services


def cleanup_task_results() -> int:
    return services.cleanup_task_results()
