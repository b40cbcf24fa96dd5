"""The dispatcher: pusher, monitor and sentinel of django-q2's cluster in one process.

It gives each worker its own pipe and so always knows which job is where: in its buffer, in
worker N's pipe, running there since T, or finished and waiting to be written. One loop waits
on every pipe, every worker's exit, the source's socket and a wake-up pipe at once; a dead or
recycled worker is replaced at once, and its jobs are settled the moment its pipe closes.
Where jobs come from and where outcomes go is its JobSource's business.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path
from types import FrameType
from typing import Any

from django import db
from django.conf import settings
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.conf import Conf, logger
from django_q.humanhash import humanize
from django_q.signals import post_execute

from pgbroker import history
from pgbroker.broker import PostgresBroker, alias
from pgbroker.cluster.messages import (
    STOP,
    BadPackage,
    Claimed,
    Done,
    KeyLost,
    NoSlotForKey,
    RunJob,
    Started,
    WorkerMessage,
    WorkerTimer,
)
from pgbroker.cluster.pool import Slot, exit_description, guard, spawn
from pgbroker.cluster.postgres import PostgresSource
from pgbroker.cluster.sources import BrokerSource, JobSource, Workers
from pgbroker.cluster.stat import STAT_EVERY, SentinelView, save_stat
from pgbroker.cluster.worker import die_with_parent
from pgbroker.scheduler import Scheduler
from pgbroker.status import StatusFile
from pgbroker.timing import TICK

WORKER_DIED = "worker {pid} died ({how}) while running it"
KEY_LOST = "handed back unstarted: its worker no longer held the cluster's key"


def source_for(broker: Broker, *, wake_fd: int, workers: Workers) -> JobSource:
    if isinstance(broker, PostgresBroker):
        return PostgresSource(broker=broker, alias=alias(), owner=random.getrandbits(62) + 1,
                              wake_fd=wake_fd, workers=workers)
    if getattr(broker, "reliable_fetch", False):  # pgbroker.reliable_redis (needs redis-py)
        from pgbroker.cluster.redisfetch import RedisSource

        return RedisSource(broker, wake_fd=wake_fd, workers=workers)
    return BrokerSource(broker, wake_fd=wake_fd, workers=workers)


class Dispatcher:
    def __init__(self, *, cluster_id: str, parent: int, broker: Broker | None = None,
                 heartbeat: ctypes.c_double | None = None, run_once: bool = False) -> None:
        self.parent = parent
        self.cluster_id = cluster_id
        self.tob = timezone.now()
        self.run_once = run_once
        self.heartbeat = heartbeat  # a shared double: monotonic time of the last loop turn
        self.slots_lock = threading.Lock()  # the fence kills workers; the loop replaces them
        self.broker = broker or get_broker()
        self.pid = os.getpid()
        self.name = humanize(cluster_id)
        self.slots: list[Slot] = []
        self.buffer: deque[Claimed] = deque()
        self.stopping = False
        self.next_tick = self.next_stat = 0.0
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        self.source = source_for(self.broker, wake_fd=self.wake_w, workers=self)
        # PGBROKER_STATUS_FILE: live and ready, for probes (pgbroker.status); not --run-once's
        path = getattr(settings, "PGBROKER_STATUS_FILE", "")
        self.status = StatusFile(path, program=Path(path).stem, pid=parent) \
            if path and not run_once else None

    # --- life cycle -----------------------------------------------------------------------

    def run(self) -> None:
        die_with_parent(self.parent)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self._stop_requested)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the main process too
        try:
            self.source.start(pid=self.pid)
        except Exception as e:  # the main process starts another: not ready until one works
            self._say(ready=False, reason=f"cannot start: {type(e).__name__}: {e}")
            raise
        db.connections.close_all()
        for number in range(Conf.WORKERS):
            self.slots.append(self._spawn(number))
        self.source.started()
        if Conf.SCHEDULER:
            Scheduler(broker=self.broker, stopping=lambda: self.stopping).start()
        logger.info("Q Cluster %s [%s] running.", self.name, self.broker.list_key)
        try:
            self._loop()
        finally:
            self.source.stop()
        self._say(ready=False, reason="stopped")
        logger.info("Q Cluster %s has stopped.", self.name)

    def _say(self, *, ready: bool, reason: str) -> None:
        """Write the status file now (at start and at the end)."""
        if self.status is not None:
            self.status.beat(ready=ready, reason=reason, force=True)

    def unready(self) -> str:
        """Why this cluster cannot run jobs now, in one line ("" when it can)."""
        return "stopping" if self.stopping else self.source.unready(time.monotonic())

    def _stop_requested(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _loop(self) -> None:
        while True:
            if self.heartbeat is not None:
                self.heartbeat.value = time.monotonic()
            self._wait()
            self._read_workers()
            if self.run_once and not self.stopping and self._drained():
                logger.info("Q Cluster %s ran what was due: stopping (--run-once)", self.name)
                self.stopping = True
            if self.stopping:
                while self.buffer:
                    self.source.hand_back(self.buffer.popleft(), give_back=1)
                for slot in self.slots:
                    if not slot.jobs and not slot.stopped and slot.process.is_alive():
                        with contextlib.suppress(OSError):
                            slot.conn.send(STOP)
                        slot.stopped = True
            else:
                self._fill()
            self.source.flush()
            self._housekeeping()
            if self.stopping and not any(s.process.is_alive() for s in self.slots) \
                    and self.source.settled():
                return

    def _wait(self) -> None:
        objects: list[Any] = [self.wake_r]
        for slot in self.slots:
            if not slot.conn.closed:
                objects += [slot.conn, slot.process.sentinel]
        now = time.monotonic()
        deadline = self.next_tick
        room = self._room()
        if room and (at := self.source.deadline()) is not None:
            deadline = min(deadline, at)
        timeout = max(0.0, deadline - now)
        if self._can_dispatch() or (room and not self.buffer and self.source.due(now)):
            timeout = 0.0
        elif room:
            objects += self.source.wait_objects()  # a NOTIFY wakes us
        try:
            ready = wait(objects, timeout)
        except InterruptedError:
            ready = []
        if self.wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.wake_r, 512):
                    pass
        self.source.after_wait(ready)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self.next_tick:
            return
        elapsed = TICK if not self.next_tick else now - self.next_tick + TICK
        self.next_tick = now + TICK
        guard(self.slots, elapsed)
        self.source.tick(now)
        if self.status is not None:  # a write at most once a second, or when it changed
            why = self.unready()
            self.status.beat(ready=not why, reason=why)
        if now >= self.next_stat:
            self.next_stat = now + STAT_EVERY
            save_stat(SentinelView(
                broker=self.broker, cluster_id=self.cluster_id, parent_pid=self.parent,
                workers=[s.process.pid for s in self.slots], tob=self.tob,
                working=any(s.jobs for s in self.slots), stopping=self.stopping,
                buffered=len(self.buffer)))

    # --- workers --------------------------------------------------------------------------

    def _spawn(self, number: int) -> Slot:
        close = [s.conn.fileno() for s in self.slots if not s.conn.closed]
        close += [*self.source.fds(), self.wake_r, self.wake_w]
        return spawn(number, setup=self.source.setup, close_fds=close)

    def _read_workers(self) -> None:
        for i, slot in enumerate(self.slots):
            if slot.conn.closed:
                continue
            gone = False
            try:
                while slot.conn.poll():
                    message = slot.conn.recv()
                    for one in message if isinstance(message, list) else (message,):
                        self._handle(slot, one)
            except (EOFError, OSError):
                gone = True
            if gone or not slot.process.is_alive():
                with self.slots_lock:
                    self.slots[i] = self._replace(slot)

    def _replace(self, slot: Slot) -> Slot:
        """A worker ended: settle the jobs in its pipe, and start another in its place."""
        slot.process.join(timeout=5)
        code, timer = slot.process.exitcode, slot.timer.value
        how = exit_description(code)
        if slot.lost:
            logger.warning("worker %s no longer held the cluster's key: handing back %s "
                           "unstarted job(s)", slot.process.pid, len(slot.jobs))
            while slot.jobs:
                self.source.hand_back(slot.jobs.popleft(), give_back=1, why=KEY_LOST)
        elif slot.jobs and code == 0 and timer in (WorkerTimer.TIMED_OUT, WorkerTimer.RECYCLED):
            # django-q2's worker ends itself only between jobs: recycled, or after the job
            # that timed out, whose result it sent first. What is still in its pipe never
            # started: back to the queue, no attempt charged.
            recycled = timer == WorkerTimer.RECYCLED
            logger.log(logging.INFO if recycled else logging.CRITICAL,
                       "worker %s ended itself (%s): handing back %s unstarted job(s)",
                       slot.process.pid, "recycled" if recycled else "after a timeout",
                       len(slot.jobs))
            while slot.jobs:
                self.source.hand_back(slot.jobs.popleft(), give_back=1)
        elif slot.jobs:
            for _ in range(max(1, min(slot.batch_left, len(slot.jobs)))):  # what was running
                running = slot.jobs.popleft()
                history.record("died", f"pg:{running.id}" if self.source.setup.owner else "",
                               worker=slot.process.pid, how=how)
                self.source.died(running, WORKER_DIED.format(pid=slot.process.pid, how=how))
            while slot.jobs:  # queued behind it, never started
                self.source.hand_back(slot.jobs.popleft(), give_back=1)
            logger.critical("reincarnated worker %s after death (%s)", slot.process.name, how)
        elif timer == WorkerTimer.RECYCLED:
            logger.info("recycled worker %s", slot.process.name)
        elif timer == WorkerTimer.TIMED_OUT:
            logger.critical("reincarnated worker %s after timeout", slot.process.name)
        elif not slot.stopped:
            logger.critical("reincarnated worker %s after death (%s)", slot.process.name, how)
        slot.conn.close()
        if self.stopping:
            slot.stopped = True
            return slot
        db.connections.close_all()
        return self._spawn(slot.number)

    def _handle(self, slot: Slot, message: WorkerMessage) -> None:
        if isinstance(message, KeyLost):  # it exits without starting: _replace hands back
            slot.lost = True
            return
        if isinstance(message, Started):  # several jobs run at once, in one call
            slot.batch_left, slot.batch_size = len(message.job_ids), message.size
            slot.batch_took = 0.0
            return
        job = None
        if slot.jobs and slot.jobs[0].id == message.job_id:
            job = slot.jobs.popleft()
            now = time.time()
            if slot.batch_left:  # the batch's time, shared by its jobs
                slot.batch_took = slot.batch_took or (now - slot.since)
                slot.recent.append(slot.batch_took / slot.batch_size)
                slot.batch_left -= 1
            else:
                slot.recent.append(now - slot.since)
                slot.batch_size = 0
            slot.since = now  # the next one in its pipe starts now
        if isinstance(message, BadPackage):
            self.source.bad_package(message.job_id, message.error)
        elif isinstance(message, NoSlotForKey):
            self.source.no_slot(message.job_id, message.error)
        elif isinstance(message, Done):
            self._finished(job, message)

    def _finished(self, job: Claimed | None, done: Done) -> None:
        self.source.finished(job, done)  # saved (if the worker sent it whole), acknowledged
        if done.task is not None:  # as django-q2's monitor does, after both
            post_execute.send(sender="django_q", task=done.task)

    # --- dispatching ----------------------------------------------------------------------

    def _drained(self) -> bool:
        return not self.buffer and not any(s.jobs for s in self.slots) \
            and self.source.drained()

    def _room(self) -> int:
        return 0 if self.stopping else sum(s.room for s in self.slots)

    def _can_dispatch(self) -> bool:
        return bool(self.buffer) and self.source.up() \
            and any(s.takes(self.buffer[0]) for s in self.slots)

    def _fill(self) -> None:
        room = self._room()
        if not room:
            return
        if not self.buffer and self.source.due(time.monotonic()):
            self.buffer.extend(self.source.take(room))
        if not self.source.up():
            return  # whether these jobs are still ours is known again after reconnecting
        # idle workers first; the jobs for one worker go in one message
        for slot in sorted(self.slots, key=lambda s: len(s.jobs)):
            jobs = []
            while self.buffer and slot.takes(self.buffer[0]):
                if not slot.jobs:
                    slot.since = time.time()
                jobs.append(self.buffer.popleft())
                slot.jobs.append(jobs[-1])
            if jobs:
                self._dispatch(slot, jobs)
        self.source.dispatched()

    def _dispatch(self, slot: Slot, jobs: list[Claimed]) -> None:
        runs = [RunJob(j.id, j.payload, j.attempts, j.waited, j.claimed_t) for j in jobs]
        try:
            slot.conn.send(runs if len(runs) > 1 else runs[0])
        except OSError:
            for job in jobs:
                slot.jobs.remove(job)
                self.source.hand_back(job, give_back=1)

    # --- what a source may ask (sources.Workers) --------------------------------------------

    def held_ids(self) -> list[int | str]:
        return [j.id for j in self.buffer] + [j.id for s in self.slots for j in s.jobs]

    def keep_only(self, ours: set[int | str]) -> None:
        self.buffer = deque(j for j in self.buffer if j.id in ours)
        for slot in self.slots:
            slot.keep_only(ours)

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.slots] + [
            {"pid": None, "job": None, "since": None, "next": [j.id for j in self.buffer]}]
