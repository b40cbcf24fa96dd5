"""django-q2 entry points for housekeeping."""

from jobs import housekeeping


def cleanup_task_results() -> int:
    return housekeeping.cleanup_task_results()
