"""A django-q2 cluster whose processes can each be SIGKILLed at any moment.

django-q2's stock cluster passes tasks pusher -> workers -> monitor through two shared
multiprocessing queues. A worker killed while it waits for a task holds the task queue's read
lock forever, and every respawned worker then blocks on it (django-q2 #23, django-q #200 and
#394; #339 is the same for the result queue's write lock). The pusher and monitor hold the
queues' other ends, so where a task is at a given moment is known to nobody.

Here one process, the dispatcher, is pusher, monitor and sentinel at once. It gives each
worker its own pipe (one task at a time, so no lock is ever shared between processes) and
therefore always knows which task is where: waiting in its small buffer, running in worker
N since T, or finished and waiting for the next batched write. It waits on every pipe, every
worker's exit and its database socket at once, so a dead or recycled worker is replaced at
once, and a task whose worker died is handed back the moment its pipe closes.

With the PostgreSQL broker (pgbroker.broker) the dispatcher's database session holds the
advisory lock named by the cluster's `owner`; every claimed job carries it. Liveness replaces
leases: a job is taken back when its worker dies (at once, by its own cluster) or when its
cluster's session ends (by any other cluster, after a grace period that lets a dispatcher
whose connection merely broke reconnect and keep its jobs). A dispatcher cut off from the
database for longer than half that grace stops its busy workers itself, so no job ever runs
in two places at once.

Every process dies with its parent (PR_SET_PDEATHSIG): a SIGKILLed `qcluster` leaves no ghost
workers consuming the queue, and a SIGKILLed dispatcher takes its workers with it (the main
process starts a new one). Workers ignore SIGTERM and SIGINT: a stop, even one sent to the
whole process group, is the dispatcher's to run, and it hands unstarted jobs back at once
instead of draining them.

With another broker (`Q_BROKER=orm`, Redis) the same process model runs and the same
crash-safety of the cluster itself holds; delivery after a crash is then that broker's (the
ORM broker's lease).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import pydoc
import queue as stdqueue
import random
import select
import signal
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

import psycopg
from django import db
from django.conf import settings
from django_q.brokers import Broker, get_broker
from django_q.conf import Conf, logger
from django_q.humanhash import humanize
from django_q.monitor import save_task
from django_q.signals import post_execute
from django_q.signing import BadSignature, SignedPackage
from django_q.utils import get_func_repr
from django_q.worker import worker as django_q_worker
from picklefield.fields import dbsafe_encode

from pgbroker import history
from pgbroker.broker import PostgresBroker, alias
from pgbroker.scheduler import Scheduler
from pgbroker.store import (
    Claimed,
    NoSlot,
    Outcome,
    OwnerKeyTaken,
    Store,
    WorkerKey,
    Writer,
    host_name,
    no_slot,
    result_line,
    timing,
)
from pgbroker.timing import GRACE, TICK, WATCH

PUBLISH_EVERY = 1.0
STAT_TTL = 3  # seconds a published stat lives unless renewed
HANG = 10.0  # a dispatcher whose loop has not turned for this long is hung: the main process
# kills it (and so its workers), and another cluster takes its jobs back (PGBROKER_HANG_SECONDS)
BAD_PACKAGE = ("the task package could not be read ({error}): it was signed with another "
               "SECRET_KEY or Q_CLUSTER name, or it is not a django-q2 package")
GAVE_UP = "gave up after {attempts} attempts; the last: {last}"
WORKER_DIED = "worker {pid} died ({how}) while running it"
HANDED_BACK = "handed back unstarted: the cluster stopped"
KEY_LOST = "handed back unstarted: its worker no longer held the cluster's key"
NO_SLOT_WHY = "waited for a database connection slot, not counted as an attempt: {error}"
NO_SLOT_WAIT = 1.0  # seconds a job refused a connection waits before it is tried again
RUN_AGAIN_MAX = 60.0
PIPELINE = 2  # jobs in one worker's pipe: the running one and the next
PIPELINE_FAST = 8  # ... while the worker's last jobs each took under FAST_JOB seconds
FAST_JOB = 0.01
PIPELINE_MAX_BYTES = 16_384  # a larger job waits for a free worker (well inside a pipe buffer)
RECHECK_MAX = 0.1
SPIN_DOWN = (0.0005, 0.001, 0.001, 0.001)  # looks for more work after the queue ran dry


def mp_context():
    return multiprocessing.get_context("fork")


def die_with_parent(parent: int) -> None:
    """Linux: receive SIGKILL when the parent exits (a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl: follow it now
        os._exit(1)


def exit_description(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def last_line(error) -> str:
    """The line of a job's error worth a log line: a traceback's last (the exception)."""
    return (str(error).strip().splitlines() or [""])[-1][:300]


def backoff(attempts: int) -> float:
    """Seconds before a failed job runs again: 1, 2, 4 ... capped at a minute."""
    return min(float(2 ** max(attempts - 1, 0)), RUN_AGAIN_MAX)


def error_summary(result: object) -> str:
    text = str(result)
    return text if len(text) <= 2000 else text[:1000] + "\n...\n" + text[-1000:]


# --- workers ------------------------------------------------------------------------------


class Inbox:
    """A worker's task queue: its own end of its own pipe (django-q2's worker reads .get()).
    With the PostgreSQL broker it starts a job only while it holds its cluster's key."""

    def __init__(self, conn: Connection, key: WorkerKey | None = None,
                 owner: int | None = None) -> None:
        self.conn = conn
        self.key = key
        self.owner = owner
        self.functions: dict[str, object] = {}
        self.recording = bool(history.directory())

    def get(self):
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                return "STOP"  # the dispatcher is gone
            if message == "STOP":
                return message
            job_id, package, attempt, waited, claimed_t = message
            try:
                held = self.key is None or self.key.holds_for(job_id)
            except NoSlot as e:  # no session, no key: the job goes back unstarted
                try:
                    self.conn.send(("noslot", job_id, str(e)))
                except OSError:
                    return "STOP"  # the dispatcher is gone
                continue
            if not held:
                with contextlib.suppress(OSError):
                    self.conn.send(("lost", job_id))
                return "STOP"  # a new worker takes the next job with a key of its own
            try:
                task = SignedPackage.loads(package)
            except (TypeError, BadSignature) as e:
                self.conn.send(("bad", job_id, BAD_PACKAGE.format(error=e)))
                continue
            task["cluster"] = Conf.CLUSTER_NAME
            task["ack_id"] = job_id
            if self.recording:
                self._record_start(task, attempt, waited, claimed_t)
            func = task["func"]
            if isinstance(func, str):  # django-q2's worker would import it for every task
                task["func_name"] = func
                task["func"] = self.functions.get(func) or self._locate(func)
            return task

    def _record_start(self, task: dict, attempt: int, waited: float | None,
                      claimed_t: float | None) -> None:
        job = f"pg:{task['ack_id']}" if self.key is not None else f"q:{task['id']}"
        if waited is not None and claimed_t:  # due-to-claim (database) + claim-to-start here
            waited += time.monotonic() - claimed_t
        history.start(job, attempt=attempt, owner=f"{self.owner:x}" if self.owner else None,
                      waited=waited, func=str(task["func"]) if isinstance(task["func"], str)
                      else task.get("func_name"), cluster=Conf.CLUSTER_NAME)

    def _locate(self, name: str):
        func = pydoc.locate(name)
        if func is not None:
            self.functions[name] = func
        return func or name  # not found: the worker reports it as the task's failure


class Outbox:
    """A worker's result queue: prepares the result row here, in the worker, so the
    dispatcher only batches rows it does not have to build."""

    def __init__(self, conn: Connection, *, native: bool, key: WorkerKey | None = None) -> None:
        self.conn = conn
        self.native = native
        self.key = key

    def put(self, task: dict) -> None:
        job_id = task.get("ack_id")
        success = bool(task["success"])
        if history.directory():
            history.record("end", f"pg:{job_id}" if self.native else f"q:{task['id']}",
                           ok=success)
        if self.key is not None:
            self.key.done()
        error = "" if success else error_summary(task["result"])
        slow = (not self.native or Conf.SAVE_LIMIT > 0 or task.get("chain")
                or task.get("hook") or task.get("cached") or post_execute.has_listeners())
        if slow:
            if "func_name" in task:  # as django-q2 stores it: the dotted path
                task["func"] = task.pop("func_name")
            self.conn.send(("done", job_id, success, None, task, error))
            return
        row = None
        if task.get("save", Conf.SAVE_LIMIT >= 0) or not success:
            func = task.get("func_name") or get_func_repr(task["func"]) or ""
            row = result_line((
                task["id"], str(task["name"])[:100], func[:256], None, pickled(task["args"]),
                pickled(task["kwargs"]), pickled(task["result"]), _short(task.get("group")),
                task["started"], task["stopped"], success, _short(task.get("cluster"))))
        self.conn.send(("done", job_id, success, row, None, error))


def pickled(value) -> str:
    return dbsafe_encode(value, False, None, False)


def _short(value) -> str | None:
    return None if value is None else str(value)[:100]


def key_lost(job: int | None, why: str) -> None:
    """A worker whose cluster's key is gone (WorkerKey): whatever it runs may be running
    elsewhere already, or soon. Exit now, in the middle of it; its dispatcher hands back the
    rest. (A SIGCONT handler calls this too: Python runs it before one more instruction of
    the job.)"""
    history.record("died", f"pg:{job}" if job is not None else "", worker=os.getpid(),
                   how=why)
    logger.critical("worker %s: %s; exiting", os.getpid(), why)
    os._exit(75)


def worker_main(conn: Connection, timer, timeout, parent: int, close_fds: list[int],
                native: bool, owner: int | None = None) -> None:
    die_with_parent(parent)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in close_fds:  # the dispatcher's database socket and the other workers' pipes
        with contextlib.suppress(OSError):
            os.close(fd)
    key = WorkerKey(alias=alias(), owner=owner, on_lost=key_lost) if native else None
    inbox = Inbox(conn, key, owner)
    if key is not None:
        signal.signal(signal.SIGCONT, lambda signum, frame: key.check_after_stop())
    django_q_worker(inbox, Outbox(conn, native=native, key=key), timer, timeout)


@dataclass
class Slot:
    """One worker and the jobs in its pipe: the first is running, the next waits behind it
    so the worker never idles while its result travels back. While the worker's recent jobs
    are fast, a few more wait behind (a round trip per job would cost more than the job)."""

    number: int
    process: multiprocessing.process.BaseProcess
    conn: Connection
    timer: object  # the raw c_float behind the worker's timer Value (read without its lock)
    jobs: deque = field(default_factory=deque)
    since: float = 0.0  # wall clock: when the running job started, for the dashboard
    stopped: bool = False  # STOP sent
    lost: bool = False  # the worker lost the cluster's key: none of its jobs started
    fenced: bool = False  # killed by the fence (the database stopped answering)
    recent: deque = field(default_factory=lambda: deque(maxlen=2))  # last job durations

    @property
    def room(self) -> int:
        if self.stopped or not self.process.is_alive():
            return 0
        fast = len(self.recent) == 2 and max(self.recent) < FAST_JOB
        return max(0, (PIPELINE_FAST if fast else PIPELINE) - len(self.jobs))

    @property
    def running(self) -> Claimed | None:
        return self.jobs[0] if self.jobs else None


# --- sources: where jobs come from --------------------------------------------------------


class GenericSource:
    """Any other django-q2 broker: its dequeue() runs in a thread (it may sleep `poll`),
    feeding a small buffer; results are saved and acknowledged the stock way."""

    native = False

    def __init__(self, broker: Broker, wake_fd: int) -> None:
        self.broker = broker
        self.buffer: stdqueue.Queue = stdqueue.Queue(maxsize=max(Conf.QUEUE_LIMIT or 1, 1))
        self.stop_event = threading.Event()
        self.wake_fd = wake_fd
        self.thread = threading.Thread(target=self._pull, name="dequeue", daemon=True)
        self.thread.start()

    def _pull(self) -> None:
        while not self.stop_event.is_set():
            try:
                tasks = self.broker.dequeue()
            except Exception as e:  # the broker is down (Redis stopped): say so, once a second
                logger.warning("cannot take jobs from the broker: %s: %s; trying again in 1 s",
                               type(e).__name__, (str(e).strip().splitlines() or [""])[0])
                time.sleep(1)
                continue
            for ack_id, package in tasks or ():
                while not self.stop_event.is_set():
                    try:
                        self.buffer.put(Claimed(ack_id, package, 0, ""), timeout=0.2)
                        break
                    except stdqueue.Full:
                        continue
                with contextlib.suppress(OSError):
                    os.write(self.wake_fd, b"j")
        db.connections.close_all()

    def take(self) -> Claimed | None:
        try:
            return self.buffer.get_nowait()
        except stdqueue.Empty:
            return None

    def stop(self) -> None:
        self.stop_event.set()


# --- writing outcomes ---------------------------------------------------------------------


class Flusher:
    """A thread that writes finished jobs (pgbroker.store.Writer) while the dispatcher goes on
    feeding workers; everything that finished while the last batch was being written goes
    into the next one."""

    def __init__(self, writer: Writer, wake_fd: int) -> None:
        self.writer = writer
        self.wake_fd = wake_fd
        self.cond = threading.Condition()
        self.pending = Outcome()
        self.batch = Outcome()  # being written now
        self.writing = False
        self.stopping = False
        self.requeued = False  # retries were written: there is work no NOTIFY announces
        self.thread = threading.Thread(target=self._run, name="flusher", daemon=True)
        self.thread.start()

    def put(self, outcome: Outcome) -> None:
        with self.cond:
            self.pending.merge(outcome)
            self.cond.notify()

    def idle(self) -> bool:
        with self.cond:
            return not self.pending and not self.writing

    def ids(self) -> set[int]:
        """Jobs finished and not yet written."""
        with self.cond:
            return self.pending.ids() | (self.batch.ids() if self.writing else set())

    def take_requeued(self) -> bool:
        with self.cond:
            requeued, self.requeued = self.requeued, False
            return requeued

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout=30)
        self.writer.close()

    def _run(self) -> None:
        with contextlib.suppress(psycopg.Error):  # the session reserved at start (Writer)
            self.writer.connect()
        while True:
            with self.cond:
                while not self.pending and not self.stopping:
                    self.cond.wait()
                if not self.pending:
                    return
                batch, self.pending = self.pending, Outcome()
                self.batch = batch
                self.writing = True
            failing_since = None
            while True:
                try:
                    self.writer.flush(batch)
                    break
                except psycopg.Error as e:
                    if failing_since is None:  # once per outage, not every try
                        failing_since = time.monotonic()
                        logger.error("writing %s finished job(s) failed, retrying: %s",
                                     len(batch.done) + len(batch.retry) + len(batch.park),
                                     (str(e).strip().splitlines() or [""])[0])
                    self.writer.close()
                    time.sleep(0.2)
            if failing_since is not None:
                logger.warning("wrote the finished jobs after %.1f s of trying",
                               time.monotonic() - failing_since)
            with self.cond:
                self.writing = False
                if batch.retry:
                    self.requeued = True
            if batch.retry:
                with contextlib.suppress(OSError):
                    os.write(self.wake_fd, b"r")


# --- the dispatcher -----------------------------------------------------------------------


class Dispatcher:
    def __init__(self, *, cluster_id: str, parent: int, broker: Broker | None = None,
                 heartbeat=None) -> None:
        self.cluster_id = cluster_id
        self.parent = parent
        self.heartbeat = heartbeat  # a shared double: monotonic time of the last loop turn
        # The watchdog thread kills workers; the loop replaces them: one at a time.
        self.slots_lock = threading.Lock()
        self.fence_seconds = timing().fence
        self.fence: threading.Thread | None = None
        self.broker = broker or get_broker()
        self.native = isinstance(self.broker, PostgresBroker)
        self.pid = os.getpid()
        self.name = humanize(cluster_id)
        self.queue = self.broker.list_key
        self.owner = random.getrandbits(62) + 1
        self.timeout = Conf.TIMEOUT
        self.slots: list[Slot] = []
        self.buffer: deque[Claimed] = deque()
        self.outcome = Outcome()
        self.slot_outage: list | None = None  # [since, jobs that waited]: no connection slot
        self.stopping = False
        # Claiming. `idle`: the flag producers read (NOTIFY only an idle cluster). `asleep`:
        # the queue was empty after the flag was set and no enqueue was in flight, so only a
        # NOTIFY, a due retry or our own hand-backs can bring work.
        self.idle = False
        self.asleep = False
        self.recheck_at: float | None = None
        self.recheck_delay = 0.001
        self.confirming = self.last_look = False
        self.spin = len(SPIN_DOWN)  # at start: no recent work, go idle at once
        self.busy_again = False
        self.run_at: float | None = None  # monotonic time the next delayed job is due
        self.dead_seen: dict[int, float] = {}
        self.down_since: float | None = None
        self.next_tick = self.next_publish = 0.0
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        self.store = Store(alias=alias(), queue=self.queue, owner=self.owner) if self.native \
            else None
        self.source = None if self.native else GenericSource(self.broker, self.wake_w)
        self.flusher = Flusher(Writer(alias=alias(), owner=self.owner), self.wake_w) \
            if self.native else None

    # --- life cycle -----------------------------------------------------------------------

    def run(self) -> None:
        die_with_parent(self.parent)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self._stop_requested)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the main process too
        if self.native:
            self.store.connect(pid=self.pid)
        db.connections.close_all()
        for number in range(Conf.WORKERS):
            self.slots.append(self._spawn(number))
        if self.native:
            self.fence = threading.Thread(target=self._watch, name="fence", daemon=True)
            self.fence.start()
        if Conf.SCHEDULER:
            Scheduler(broker=self.broker, stopping=lambda: self.stopping).start()
        logger.info("Q Cluster %s [%s] running.", self.name, self.queue)
        try:
            self._loop()
        finally:
            if self.source is not None:
                self.source.stop()
            if self.flusher is not None:
                self.flusher.stop()
            if self.store is not None:
                with contextlib.suppress(psycopg.Error):
                    self.store.leave()
                self.store.close()
        logger.info("Q Cluster %s has stopped.", self.name)

    def _stop_requested(self, signum, frame) -> None:
        self.stopping = True

    def _loop(self) -> None:
        while True:
            if self.heartbeat is not None:
                self.heartbeat.value = time.monotonic()
            self._wait()
            self._read_workers()
            if self.stopping:
                self._hand_back_buffer()
                for slot in self.slots:
                    if not slot.jobs and not slot.stopped and slot.process.is_alive():
                        with contextlib.suppress(OSError):
                            slot.conn.send("STOP")
                        slot.stopped = True
            else:
                self._fill()
            self._flush()
            self._housekeeping()
            if self.stopping and not any(s.process.is_alive() for s in self.slots) \
                    and (not self.native or self.flusher.idle()):
                return

    def _wait(self) -> None:
        objects: list = [self.wake_r]
        for slot in self.slots:
            if not slot.conn.closed:
                objects += [slot.conn, slot.process.sentinel]
        now = time.monotonic()
        deadline = self.next_tick
        if self._room():
            for at in (self.recheck_at, self.run_at):
                if at is not None:
                    deadline = min(deadline, at)
        timeout = max(0.0, deadline - now)
        if self.outcome or self._can_dispatch() or self._should_claim(now):
            timeout = 0.0
        elif self.native and self.store.up and self._room():
            objects.append(self.store)  # a NOTIFY wakes us
        try:
            ready = wait(objects, timeout)
        except InterruptedError:
            ready = []
        if self.wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.wake_r, 512):
                    pass
        if self.native and self.store.up and self.store in ready:
            try:
                self.store.drain_notifications()
            except psycopg.Error as e:
                self._lost(e)

    # --- workers --------------------------------------------------------------------------

    def _spawn(self, number: int) -> Slot:
        ours, theirs = mp_context().Pipe(duplex=True)
        timer = mp_context().Value("f", -1)
        close = [s.conn.fileno() for s in self.slots if not s.conn.closed]
        if self.store is not None and self.store.up:
            close.append(self.store.fileno())
        if self.flusher is not None and self.flusher.writer.conn is not None \
                and not self.flusher.writer.conn.closed:
            close.append(self.flusher.writer.conn.fileno())
        close += [self.wake_r, self.wake_w]
        process = mp_context().Process(
            target=worker_main, name=f"Worker-{number}",
            args=(theirs, timer, self.timeout, os.getpid(), close, self.native, self.owner))
        process.daemon = Conf.DAEMONIZE_WORKERS
        process.start()
        theirs.close()
        return Slot(number=number, process=process, conn=ours, timer=timer.get_obj())

    def _read_workers(self) -> None:
        for i, slot in enumerate(self.slots):
            if slot.conn.closed:
                continue
            gone = False
            try:
                while slot.conn.poll():
                    self._handle(slot, slot.conn.recv())
            except (EOFError, OSError):
                gone = True
            if gone or not slot.process.is_alive():
                with self.slots_lock:
                    self.slots[i] = self._replace(slot)

    def _replace(self, slot: Slot) -> Slot:
        slot.process.join(timeout=5)
        how = exit_description(slot.process.exitcode)
        if slot.lost:
            logger.warning("worker %s no longer held the cluster's key: handing back %s "
                           "unstarted job(s)", slot.process.pid, len(slot.jobs))
            while slot.jobs:
                self._handed_back(slot.jobs.popleft(), give_back=1, why=KEY_LOST)
        elif slot.jobs and slot.process.exitcode == 0 and slot.timer.value in (0, -2):
            # django-q2's worker ends itself only between jobs: recycled (-2), or after the
            # job that timed out (0), whose result it sent first. What is still in its pipe
            # never started: back to the queue, no attempt charged.
            recycled = slot.timer.value == -2
            logger.log(logging.INFO if recycled else logging.CRITICAL,
                       "worker %s ended itself (%s): handing back %s unstarted job(s)",
                       slot.process.pid, "recycled" if recycled else "after a timeout",
                       len(slot.jobs))
            while slot.jobs:
                self._handed_back(slot.jobs.popleft(), give_back=1)
        elif slot.jobs:
            why = WORKER_DIED.format(pid=slot.process.pid, how=how)
            history.record("died", f"pg:{slot.jobs[0].id}" if self.native else "",
                           worker=slot.process.pid, how=how)
            self._died(slot.jobs.popleft(), why)
            while slot.jobs:  # queued behind it, never started
                self._handed_back(slot.jobs.popleft(), give_back=1)
            logger.critical("reincarnated worker %s after death (%s)", slot.process.name, how)
        elif slot.timer.value == -2:
            logger.info("recycled worker %s", slot.process.name)
        elif slot.timer.value == 0:
            logger.critical("reincarnated worker %s after timeout", slot.process.name)
        elif not slot.stopped:
            logger.critical("reincarnated worker %s after death (%s)", slot.process.name, how)
        slot.conn.close()
        if self.stopping:
            slot.stopped = True
            return slot
        db.connections.close_all()
        return self._spawn(slot.number)

    def _handle(self, slot: Slot, message: tuple) -> None:
        kind, job_id = message[0], message[1]
        if kind == "lost":  # it exits without starting anything: _replace hands its jobs back
            slot.lost = True
            return
        job = None
        if slot.jobs and slot.jobs[0].id == job_id:
            job = slot.jobs.popleft()
            now = time.time()
            slot.recent.append(now - slot.since)
            slot.since = now  # the next one in its pipe starts now
        if kind == "bad":
            self._park_or_drop(job_id, message[2])
            return
        if kind == "noslot":
            self._no_slot(job_id, message[2])
            return
        _, _, success, row, task, error = message
        if task is not None:  # chains, hooks, cached results, another broker: django-q2's way
            save_task(task, self.broker)
            if not self.native:
                if not success:
                    logger.warning("job %s failed: %s", task.get("name"),
                                   last_line(task.get("result")))
                if success or task.get("ack_failure", False):
                    self.broker.acknowledge(job_id)
                post_execute.send(sender="django_q", task=task)
                return
            post_execute.send(sender="django_q", task=task)
        elif row is not None:
            self.outcome.results.append(row)
        if success or (task or {}).get("ack_failure", False):
            self.outcome.done.append(job_id)
            if self.slot_outage is not None:
                self._slots_again()
            return
        if self.native and no_slot(error):  # the job could not connect: not the job's fault
            self._no_slot(job_id, last_line(error))
            return
        if self.native and self.slot_outage is not None:
            self._slots_again()
        attempts = job.attempts if job else 1
        first_line = last_line(error)
        if Conf.MAX_ATTEMPTS > 0 and attempts >= Conf.MAX_ATTEMPTS:
            self.outcome.park.append((job_id, GAVE_UP.format(attempts=attempts, last=error)))
            logger.error("job %s failed on attempt %s and is parked: %s", job_id, attempts,
                         first_line)
        else:
            delay = backoff(attempts)
            again = time.strftime("%H:%M:%S", time.localtime(time.time() + delay))
            self.outcome.retry.append(
                (job_id, delay, 0, f"attempt {attempts} failed, runs again at {again}: {error}"))
            logger.warning("job %s failed on attempt %s, runs again at %s: %s", job_id,
                           attempts, again, first_line)

    def _no_slot(self, job_id: int, error: str) -> None:
        """PostgreSQL had no connection slot for the job (its worker's key session, or the
        job's own connection): back in the queue in a second, its attempt given back, so a
        full server parks nothing. Said once per outage."""
        if not self.native:
            return
        self.outcome.retry.append((job_id, NO_SLOT_WAIT, 1, NO_SLOT_WHY.format(error=error)))
        if self.slot_outage is None:
            self.slot_outage = [time.monotonic(), 0]
            logger.error("PostgreSQL has no connection slot for a worker (%s): its jobs wait "
                         "and go on when one frees; no attempt is counted", error)
        self.slot_outage[1] += 1

    def _slots_again(self) -> None:
        since, jobs = self.slot_outage
        self.slot_outage = None
        logger.warning("PostgreSQL has connection slots again: %d job attempt(s) waited %.1f s "
                       "for one",
                       jobs, time.monotonic() - since)

    def _died(self, job: Claimed, why: str) -> None:
        if not self.native:
            return  # the broker's lease brings it back
        if Conf.MAX_ATTEMPTS > 0 and job.attempts >= Conf.MAX_ATTEMPTS:
            self.outcome.park.append((job.id, GAVE_UP.format(attempts=job.attempts, last=why)))
        else:
            self.outcome.retry.append((job.id, 0.0, 0, why))

    def _handed_back(self, job: Claimed, *, give_back: int, why: str = HANDED_BACK) -> None:
        if self.native:
            self.outcome.retry.append((job.id, 0.0, give_back, why))

    def _park_or_drop(self, job_id: int, error: str) -> None:
        if self.native:
            self.outcome.park.append((job_id, error))
        else:
            logger.error("Failed to push task to queue: %s", error)
            self.broker.fail(job_id)

    # --- claiming and dispatching ---------------------------------------------------------

    def _room(self) -> int:
        if self.stopping:
            return 0
        return sum(s.room for s in self.slots)

    def _can_dispatch(self) -> bool:
        if not self._room() or (self.native and not self.store.up):
            return False
        if self.buffer:
            return any(s.room and (not s.jobs or len(self.buffer[0].payload) <= PIPELINE_MAX_BYTES)
                       for s in self.slots)
        return not self.native and not self.source.buffer.empty()

    def _should_claim(self, now: float) -> bool:
        if not self.native or not self.store.up or not self._room() or self.buffer:
            return False
        if self.store.woken or (self.run_at is not None and now >= self.run_at):
            return True
        if self.asleep:
            return False
        return self.recheck_at is None or now >= self.recheck_at

    def _fill(self) -> None:
        if not self._room():
            return
        if self.native and self._should_claim(time.monotonic()):
            self._claim()
        try:
            self._dispatch_buffer()
        finally:
            if self.busy_again and self.store.up:  # busy now: producers need not wake us
                self.busy_again = False
                try:
                    self.store.set_idle(False)
                    self.idle = self.confirming = False
                except psycopg.Error as e:
                    self._lost(e)

    def _dispatch_buffer(self) -> None:
        if self.native and not self.store.up:
            return  # whether these jobs are still ours is known again after reconnecting
        # Idle workers first; a busy worker gets a job queued behind its running one only if
        # the job is small: a large one could fill its pipe while the worker, still busy,
        # is itself blocked sending a large result back (both ends would wait forever).
        for slot in sorted(self.slots, key=lambda s: len(s.jobs)):
            while slot.room:
                if not self.buffer and not self.native:
                    job = self.source.take()
                    if job is None:
                        return
                    self.buffer.append(job)
                if not self.buffer:
                    return
                if slot.jobs and len(self.buffer[0].payload) > PIPELINE_MAX_BYTES:
                    break
                self._dispatch(slot, self.buffer.popleft())

    def _claim(self) -> None:
        room = self._room()
        want = max(room, min(Conf.BULK, room + (Conf.QUEUE_LIMIT or 0)))
        try:
            claimed = self.store.claim(want)
            if not claimed and self.spin < len(SPIN_DOWN):
                # Work came in a moment ago: more may follow at once. Look again a few times
                # over some milliseconds before asking producers for NOTIFYs, which would
                # serialise their commits while we keep up with them.
                self.recheck_at = time.monotonic() + SPIN_DOWN[self.spin]
                self.spin += 1
            elif not claimed:
                self._go_idle()
            else:
                self.asleep = False
                self.recheck_at = None
                self.recheck_delay = 0.001
                self.last_look = False
                self.spin = 0
                self.busy_again = self.idle  # clear the flag once these jobs are dispatched
        except psycopg.Error as e:
            self._lost(e)
            return
        for job in claimed:
            if Conf.MAX_ATTEMPTS > 0 and job.attempts > Conf.MAX_ATTEMPTS:
                self.outcome.park.append((job.id, GAVE_UP.format(
                    attempts=job.attempts - 1, last=job.last_error or "(no error recorded)")))
            else:
                self.buffer.append(job)

    def _go_idle(self) -> None:
        """The queue looked empty. Set the flag that makes producers wake us; then wait
        until no enqueue that saw us busy is still in flight, look one last time, and sleep.
        With the flag already confirmed, every producer since has seen it: sleep at once."""
        if not self.idle:
            self.store.set_idle(True)
            self.idle = True
            self.confirming = True
        if self.confirming:
            if not self.store.no_enqueue_in_flight():
                self.recheck_at = time.monotonic() + self.recheck_delay
                self.recheck_delay = min(self.recheck_delay * 2, RECHECK_MAX)
                return
            if not self.last_look:
                self.last_look = True
                self.recheck_at = time.monotonic()
                return
        self.confirming = self.last_look = False
        self.asleep = True
        self.recheck_at = None
        self.recheck_delay = 0.001
        seconds = self.store.seconds_to_next_run()  # jobs waiting for a retry
        self.run_at = None if seconds is None else time.monotonic() + seconds

    def _dispatch(self, slot: Slot, job: Claimed) -> None:
        try:
            slot.conn.send((job.id, job.payload, job.attempts,
                            job.waited if self.native else None, job.claimed_t))
        except OSError:
            self._handed_back(job, give_back=1)
            return
        if not slot.jobs:
            slot.since = time.time()
        slot.jobs.append(job)

    def _wake(self) -> None:
        """Work may be there that no NOTIFY announces (our own hand-backs, taken-back jobs)."""
        self.asleep = False
        self.recheck_at = None

    # --- finishing ------------------------------------------------------------------------

    def _flush(self) -> None:
        if self.outcome:
            if self.native:
                self.flusher.put(self.outcome)
            self.outcome = Outcome()
        if self.native and self.flusher.take_requeued():
            self._wake()

    def _hand_back_buffer(self) -> None:
        while self.buffer:
            self._handed_back(self.buffer.popleft(), give_back=1)

    # --- housekeeping ---------------------------------------------------------------------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self.next_tick:
            return
        elapsed = TICK if not self.next_tick else now - self.next_tick + TICK
        self.next_tick = now + TICK
        self._check_threads()
        self._timers(elapsed)
        if self.native:
            if not self.store.up:
                self._reconnect()
            if self.store.up:
                try:
                    self._sweep(now)
                    if now >= self.next_publish:
                        self.next_publish = now + PUBLISH_EVERY
                        self.store.publish(idle=self.idle, workers=self.snapshot())
                except psycopg.Error as e:
                    self._lost(e)
        elif now >= self.next_publish:
            self.next_publish = now + PUBLISH_EVERY
            self._publish_stat()

    def _check_threads(self) -> None:
        """Without its flusher nothing it runs is ever acknowledged, without its fence a cut
        may let its jobs run twice: a dispatcher missing either stops (its main process starts
        a new one, and its jobs are taken back)."""
        if not self.native:
            return
        for thread in (self.flusher.thread, self.fence):
            if not thread.is_alive() and not self.stopping:
                raise RuntimeError(f"the dispatcher's {thread.name} thread died")

    def _publish_stat(self) -> None:
        """Another broker (Redis): say who we are through its stat keys, as django-q2's
        sentinel does, expiring unless renewed (`<Q_STAT>:<cluster name>:<host>:<pid>`)."""
        stat = {"host": host_name(), "pid": os.getpid(), "cluster": Conf.CLUSTER_NAME,
                "workers": self.snapshot()[:-1], "buffered": self.source.buffer.qsize(),
                "at": time.time()}
        try:
            self.broker.set_stat(f"{Conf.Q_STAT}:{Conf.CLUSTER_NAME}:{host_name()}:{os.getpid()}",
                                 json.dumps(stat), STAT_TTL)
        except Exception as e:  # the broker is down: the stat expires, which says so
            logger.debug("could not publish the cluster's stat: %s", e)

    def _timers(self, elapsed: float) -> None:
        """django-q2's guard: a worker still busy `timeout + 3` s after it started is
        killed (its own SIGALRM normally stops the task at `timeout`)."""
        for slot in self.slots:
            value = slot.timer.value
            if value > 0 and slot.process.is_alive():
                value -= elapsed
                slot.timer.value = max(value, 0.0)
                if value <= 0:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.process.pid, signal.SIGKILL)

    def snapshot(self) -> list[dict]:
        return [{"pid": s.process.pid, "job": s.running.id if s.running else None,
                 "since": s.since if s.running else None,
                 "next": [j.id for j in list(s.jobs)[1:]]} for s in self.slots] + [
                {"pid": None, "job": None, "since": None, "next": [j.id for j in self.buffer]}]

    def _sweep(self, now: float) -> None:
        dead = self.store.dead_owners()
        for owner in list(self.dead_seen):
            if owner not in dead:
                del self.dead_seen[owner]  # alive again (it reconnected) or already gone
        for owner in dead:
            first = self.dead_seen.setdefault(owner, now)
            try:
                if now - first >= GRACE:
                    n = self.store.take_back(owner)
                    del self.dead_seen[owner]
                    if n:
                        logger.warning("took back %s job(s) of dead cluster %x", n, owner)
                        history.record("took_back", "", owner=f"{owner:x}", jobs=n)
                        self._wake()
            finally:
                self.store.release_key(owner)

    # --- losing the database --------------------------------------------------------------

    def _watch(self) -> None:
        """The fence, in a thread of its own so that a call blocked on a dead peer cannot
        blind it: no statement has come back from the database for `fence` seconds, so this
        cluster may be cut off, and its busy workers are stopped before the server can end
        its sessions and another cluster take their jobs (pgbroker.timing has the order)."""
        while not self.stopping:
            time.sleep(WATCH)
            silent = time.monotonic() - self.store.last_ok
            if silent < self.fence_seconds:
                continue
            with self.slots_lock:
                for slot in self.slots:
                    if slot.running is None or slot.fenced or slot.process.exitcode is not None:
                        continue
                    logger.critical("no answer from the database for %.1f s: stopping worker "
                                    "%s (job %s) before another cluster may take it over",
                                    silent, slot.process.pid, slot.running.id)
                    slot.fenced = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.process.pid, signal.SIGKILL)
                    # now, not when the loop (maybe blocked on the dead peer) notices it
                    history.record("died", f"pg:{slot.running.id}", worker=slot.process.pid,
                                   how="stopped by the fence")

    def _lost(self, error: Exception) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            logger.error("lost the database: %s", str(error).strip() or type(error).__name__)
        self.store.close()

    def _reconnect(self) -> None:
        down = time.monotonic() - (self.down_since or time.monotonic())
        try:
            self.store.connect(pid=self.pid)
        except (psycopg.Error, OwnerKeyTaken) as e:
            logger.debug("reconnect failed: %s", e)
            return
        logger.warning("database back after %.1fs", down)
        self.down_since = None
        self.idle = self.confirming = self.last_look = False
        self._wake()
        mine = [j.id for j in self.buffer] + [j.id for s in self.slots for j in s.jobs]
        try:
            ours = self.store.still_ours(mine) if mine else set()
        except psycopg.Error as e:
            self._lost(e)
            return
        self.buffer = deque(j for j in self.buffer if j.id in ours)
        for slot in self.slots:
            if any(j.id not in ours for j in slot.jobs):
                logger.critical("jobs of worker %s were taken back while we were away: "
                                "stopping it", slot.process.pid)
                slot.jobs = deque(j for j in slot.jobs if j.id in ours)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signal.SIGKILL)
        known = set(mine) | self.outcome.ids() | self.flusher.ids()
        try:
            orphans = self.store.hand_back_unknown(known)
        except psycopg.Error as e:
            self._lost(e)
            return
        if orphans:
            logger.warning("handed back %s job(s) claimed while the connection broke: %s",
                           len(orphans), orphans[:10])


def dispatcher_main(cluster_id: str, parent: int, heartbeat) -> None:
    try:
        Dispatcher(cluster_id=cluster_id, parent=parent, heartbeat=heartbeat).run()
    except Exception:
        logger.critical("the dispatcher failed:\n%s", traceback.format_exc())
        raise


# --- the main process ---------------------------------------------------------------------


@dataclass
class Cluster:
    """`manage.py qcluster`: starts the dispatcher and starts it again if it dies."""

    restarts: int = 0
    stopping: bool = False
    process: multiprocessing.process.BaseProcess | None = None
    started: list[float] = field(default_factory=list)
    heartbeat: object = None  # the dispatcher's last loop turn (a shared double, monotonic)
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
                    if self.stopping:
                        return 0 if code == 0 else 1
                    logger.critical("the dispatcher died (%s): starting a new one",
                                    exit_description(code))
                    self._pace()
                if self.stopping:
                    return 0
                self._start()
            with contextlib.suppress(InterruptedError):
                select.select([self.process.sentinel], [], [], 0.5)
            self._check_hung()

    def _check_hung(self) -> None:
        """A dispatcher that is stopped (SIGSTOP, a debugger) or stuck holds its claimed jobs
        and its workers hold its key: nobody else may run them. Past HANG, kill it: its
        workers die with it, its key is freed, and its jobs are taken back. Time this process
        was stopped itself (the whole cluster was) does not count: both resumed together."""
        now = time.monotonic()
        if now - self.last_turn > 2.0:
            self.resumed_at = now
        self.last_turn = now
        silent = now - max(self.heartbeat.value, self.resumed_at)
        if self.stopping or silent < self.hang or not self.process.is_alive():
            return
        logger.critical("the dispatcher (pid %s) has not turned its loop for %.0f s: "
                        "killing it", self.process.pid, silent)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        history.record("died", "", children_of=self.process.pid, how="its dispatcher hung")

    def _pace(self) -> None:
        now = time.monotonic()
        self.started = [t for t in self.started if now - t < 10]
        if len(self.started) >= 5:  # crashing at once, again and again: slow down
            time.sleep(2)

    def _start(self) -> None:
        db.connections.close_all()
        cluster_id = os.urandom(16).hex()
        self.heartbeat = mp_context().Value("d", time.monotonic(), lock=False)
        self.process = mp_context().Process(target=dispatcher_main, name="Dispatcher",
                                            args=(cluster_id, os.getpid(), self.heartbeat))
        self.process.start()
        self.started.append(time.monotonic())

    def _stop(self, signum, frame) -> None:
        if not self.stopping:
            logger.info("Q Cluster stopping.")
        self.stopping = True
        if self.process is not None and self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
