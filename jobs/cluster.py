"""Run a task on the cluster and wait a little for its answer: the admin's "do it now"
buttons."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django_q.tasks import async_task, fetch


@dataclass(frozen=True)
class ClusterRun:
    done: bool  # False: no cluster finished it within the wait (it stays queued)
    ok: bool = False
    result: object = None


def run_on_cluster(func: str, *, wait_seconds: float | None = None) -> ClusterRun:
    """Enqueue `func` and wait a little for it to finish.

    The admin's "do it now" buttons use this rather than running the work in the web
    process, where an armed crash fault would take the web server down with it.
    """
    wait = settings.CLUSTER_WAIT_SECONDS if wait_seconds is None else wait_seconds
    task = fetch(async_task(func), wait=int(wait * 1000))
    if task is None:
        return ClusterRun(done=False)
    return ClusterRun(done=True, ok=bool(task.success), result=task.result)


def run_now(func: str, what: str) -> tuple[int, str]:
    """A control that runs `func` on the cluster (not in the web process, where an armed crash
    fault would take the web server down) and says how it went."""
    run = run_on_cluster(func)
    if not run.done:
        return messages.WARNING, (f"{what}: queued, but no cluster answered in time "
                                  "(is `make run` running?). It runs when one does.")
    if not run.ok:
        first_line = str(run.result).strip().splitlines()[0] if run.result else "unknown error"
        return messages.ERROR, f"{what} failed on the cluster: {first_line}"
    return messages.SUCCESS, f"{what}: {run.result}."
