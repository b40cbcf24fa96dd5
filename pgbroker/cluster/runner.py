"""The worker's loop: django-q2's `worker()` contract, without its cost per job.

django-q2's `django_q.worker.worker` builds a translated log line for every task (two lazy
translation lookups, even with INFO off), installs and removes its SIGALRM handler around every
task, and takes the timer's lock four times. At thousands of jobs a second that is a fifth of a
worker's time. This loop keeps everything a task or a project can observe:

- `post_spawn` once; `pre_execute` (with the function) before, `post_execute_in_worker` after
  each task; the task's `result`, `success` and `stopped` as django-q2 sets them, the error as
  `"<error> : <traceback>"`; Q_CLUSTER's error reporter;
- a task's own `timeout` (else the cluster's), raising django-q2's TimeoutException in the
  task through SIGALRM; the timer values the dispatcher reads (messages.WorkerTimer):
  busy = the timeout + 3, IDLE, TIMED_OUT (then the worker ends), RECYCLED after
  Q_CLUSTER's `recycle` tasks or its `max_rss`;
- stale database connections closed before each task (not for `sync` tasks);
- the same log lines ("processing", "ready for work", "stopped doing work"), built only when
  INFO is on.
"""

from __future__ import annotations

import logging
import pydoc
import signal
import traceback
from collections.abc import Callable
from multiprocessing.process import current_process
from multiprocessing.sharedctypes import Synchronized
from types import FrameType
from typing import Any, Protocol

from django import db
from django.utils import timezone
from django_q.conf import Conf, error_reporter, logger
from django_q.exceptions import TimeoutException
from django_q.signals import post_execute_in_worker, post_spawn, pre_execute
from django_q.worker import rss_check

from pgbroker.cluster.messages import STOP, WorkerTimer


class Tasks(Protocol):
    def get(self) -> dict[str, Any] | str: ...


class Results(Protocol):
    def put(self, task: dict[str, Any]) -> None: ...


class Alarm:
    """SIGALRM raises TimeoutException in the running task, as django-q2's TimeoutHandler
    does; the handler is installed once, and again only if a task replaced it."""

    def __init__(self) -> None:
        self.seconds = 0

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        raise TimeoutException(f"Task exceeded maximum timeout value ({self.seconds} seconds)")

    def set(self, seconds: int) -> None:
        if signal.getsignal(signal.SIGALRM) != self._raise:
            signal.signal(signal.SIGALRM, self._raise)
        self.seconds = seconds
        signal.alarm(seconds)

    @staticmethod
    def clear() -> None:
        signal.alarm(0)


def run(tasks: Tasks, results: Results, timer: Synchronized[float],
        timeout: int | None) -> None:
    name = current_process().name
    logger.info("%s ready for work at %s", name, current_process().pid)
    post_spawn.send(sender="django_q", proc_name=name)
    raw = timer.get_obj()  # the dispatcher reads it without the lock, so no need to take it
    default = -1 if timeout is None else timeout
    alarm = Alarm()
    count = 0
    while (task := tasks.get()) != STOP:
        assert isinstance(task, dict)
        raw.value = WorkerTimer.IDLE
        count += 1
        func: Callable[..., Any] | None = task["func"]
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s processing %s '%s'%s", name, task["name"],
                        task.get("func_name") or func,
                        f" [{task['group']}]" if "group" in task else "")
        if not callable(func):
            func = pydoc.locate(str(func))  # type: ignore[assignment]
        if not task.get("sync", False):
            db.close_old_connections()
        limit = task.pop("timeout", default)
        pre_execute.send(sender="django_q", func=func, task=task)
        raw.value = limit if limit == -1 else limit + 3
        timed_out = False
        try:
            if func is None or not callable(func):
                raise ValueError(f"Function {task['func']} is not defined")
            if limit != -1:
                alarm.set(limit)
            try:
                value = func(*task["args"], **task["kwargs"])
            finally:
                if limit != -1:
                    alarm.clear()
            task["result"], task["success"] = value, True
        except (Exception, TimeoutException) as e:
            timed_out = isinstance(e, TimeoutException)
            task["result"], task["success"] = f"{e} : {traceback.format_exc()}", False
            if error_reporter:
                error_reporter.report()
            if task.get("sync", False):
                post_execute_in_worker.send(sender="django_q", func=func, task=task)
                raise
        task["stopped"] = timezone.now()
        post_execute_in_worker.send(sender="django_q", func=func, task=task)
        results.put(task)
        if timed_out:
            raw.value = WorkerTimer.TIMED_OUT
            break
        raw.value = WorkerTimer.IDLE
        if count == Conf.RECYCLE or rss_check():
            raw.value = WorkerTimer.RECYCLED
            break
    logger.info("%s stopped doing work", name)
