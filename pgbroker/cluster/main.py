"""The cluster's main process: it runs no job and holds no connection, so nothing can stop it
but a signal; it keeps one dispatcher (pgbroker.cluster.dispatcher) alive."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import select
import signal
import time
import traceback
from dataclasses import dataclass, field
from types import FrameType

from django import db
from django.conf import settings
from django_q.conf import logger

from pgbroker import history
from pgbroker.cluster.dispatcher import Dispatcher
from pgbroker.cluster.pool import exit_description, mp_context

HANG = 10.0  # a dispatcher whose loop has not turned for this long is hung: the main process
# kills it (and so its workers), and another cluster takes its jobs back (PGBROKER_HANG_SECONDS)


def dispatcher_main(cluster_id: str, parent: int, heartbeat: ctypes.c_double,
                    run_once: bool = False) -> None:
    try:
        Dispatcher(cluster_id=cluster_id, parent=parent, heartbeat=heartbeat,
                   run_once=run_once).run()
    except Exception:
        logger.critical("the dispatcher failed:\n%s", traceback.format_exc())
        raise


@dataclass
class MainProcess:
    """`manage.py qcluster`'s own process: starts the dispatcher, starts it again if it dies,
    and kills it if it hangs."""

    run_once: bool = False  # stop once nothing is due (and all that ran is written)
    restarts: int = 0
    stopping: bool = False
    process: multiprocessing.process.BaseProcess | None = None
    started: list[float] = field(default_factory=list)
    # the dispatcher's last loop turn (a double shared with it, monotonic)
    heartbeat: ctypes.c_double = field(default_factory=lambda: ctypes.c_double(0.0))
    last_turn: float = field(default_factory=time.monotonic)  # this process's last check
    resumed_at: float = 0.0  # when this process last found it had been stopped
    hang: float = field(default_factory=lambda: float(getattr(settings, "PGBROKER_HANG_SECONDS",
                                                               HANG)))

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        logger.info("Q Cluster starting (pid %s).", os.getpid())
        while True:
            if self.process is None or not self.process.is_alive():
                if self.process is not None:
                    code = self.process.exitcode
                    if self.run_once and code == 0:
                        return 0
                    if self.stopping:
                        return 0 if code == 0 else 1
                    logger.critical("the dispatcher died (%s): starting a new one",
                                    exit_description(code))
                    self._pace()
                if self.stopping:
                    return 0
                self.process = self._start()
            with contextlib.suppress(InterruptedError):
                select.select([self.process.sentinel], [], [], 0.5)
            self._check_hung(self.process)

    def _check_hung(self, process: multiprocessing.process.BaseProcess) -> None:
        """A dispatcher that is stopped (SIGSTOP, a debugger) or stuck holds its claimed jobs
        and its workers hold its key: nobody else may run them. Past HANG, kill it: its
        workers die with it, its key is freed, and its jobs are taken back. Time this process
        was stopped itself (the whole cluster was) does not count: both resumed together."""
        now = time.monotonic()
        if now - self.last_turn > 2.0:
            self.resumed_at = now
        self.last_turn = now
        silent = now - max(self.heartbeat.value, self.resumed_at)
        if self.stopping or silent < self.hang or not process.is_alive() or not process.pid:
            return
        logger.critical("the dispatcher (pid %s) has not turned its loop for %.0f s: "
                        "killing it", process.pid, silent)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        history.record("died", "", children_of=process.pid, how="its dispatcher hung")

    def _pace(self) -> None:
        now = time.monotonic()
        self.started = [t for t in self.started if now - t < 10]
        if len(self.started) >= 5:  # crashing at once, again and again: slow down
            time.sleep(2)

    def _start(self) -> multiprocessing.process.BaseProcess:
        db.connections.close_all()
        cluster_id = os.urandom(16).hex()
        self.heartbeat = mp_context().RawValue(ctypes.c_double, time.monotonic())
        process = mp_context().Process(
            target=dispatcher_main, name="Dispatcher",
            args=(cluster_id, os.getpid(), self.heartbeat, self.run_once))
        process.start()
        self.started.append(time.monotonic())
        return process

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            logger.info("Q Cluster stopping.")
        self.stopping = True
        if self.process is not None and self.process.is_alive() and self.process.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
