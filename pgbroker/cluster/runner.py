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

A job of a batched function (pgbroker.batching) takes the jobs of the same function waiting
behind it in the pipe into one call of its batch form: each job still gets its own signals,
result and `stopped`, and the call runs under the first job's timeout.
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

from pgbroker.batching import WRONG_COUNT, Batch, batch_of, failure
from pgbroker.cluster.messages import STOP, WorkerTimer


class Tasks(Protocol):
    def get(self) -> dict[str, Any] | str: ...

    def more(self, first: dict[str, Any], limit: int) -> list[dict[str, Any]]: ...


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
        func: Callable[..., Any] | None = task["func"]
        if not callable(func):
            func = pydoc.locate(str(func))  # type: ignore[assignment]
        spec = batch_of(func)
        batch = [task]
        if spec is not None and not task["args"]:
            batch += tasks.more(task, spec.size - 1)
        count += len(batch)
        for one in batch:
            if logger.isEnabledFor(logging.INFO):
                logger.info("%s processing %s '%s'%s", name, one["name"],
                            one.get("func_name") or func,
                            f" [{one['group']}]" if "group" in one else "")
        if not task.get("sync", False):
            db.close_old_connections()
        limit = task.pop("timeout", default)
        for one in batch:
            one.pop("timeout", None)
            pre_execute.send(sender="django_q", func=func, task=one)
        raw.value = limit if limit == -1 else limit + 3
        timed_out = False
        try:
            if func is None or not callable(func):
                raise ValueError(f"Function {task['func']} is not defined")
            if limit != -1:
                alarm.set(limit)
            try:
                if len(batch) == 1:
                    task["result"], task["success"] = func(*task["args"], **task["kwargs"]), True
                else:
                    _run_batch(spec, batch, func)
            finally:
                if limit != -1:
                    alarm.clear()
        except (Exception, TimeoutException) as e:
            timed_out = isinstance(e, TimeoutException)
            for one in batch:
                one["result"], one["success"] = f"{e} : {traceback.format_exc()}", False
            if error_reporter:
                error_reporter.report()
            if task.get("sync", False):
                post_execute_in_worker.send(sender="django_q", func=func, task=task)
                raise
        stopped = timezone.now()
        for one in batch:
            one["stopped"] = stopped
            post_execute_in_worker.send(sender="django_q", func=func, task=one)
            results.put(one)
        if timed_out:
            raw.value = WorkerTimer.TIMED_OUT
            break
        raw.value = WorkerTimer.IDLE
        if count >= Conf.RECYCLE > 0 or rss_check():
            raw.value = WorkerTimer.RECYCLED
            break
    logger.info("%s stopped doing work", name)


def _run_batch(spec: Batch | None, batch: list[dict[str, Any]], func: Callable[..., Any]) -> None:
    """One call for the jobs of a batched function: one result each (an exception: failed)."""
    assert spec is not None
    values = list(spec.many([one["kwargs"] for one in batch]))
    if len(values) != len(batch):
        raise ValueError(WRONG_COUNT.format(func=getattr(func, "__name__", func),
                                            got=len(values), asked=len(batch)))
    for one, value in zip(batch, values, strict=True):
        if isinstance(value, BaseException):
            one["result"], one["success"] = failure(value), False
        else:
            one["result"], one["success"] = value, True
