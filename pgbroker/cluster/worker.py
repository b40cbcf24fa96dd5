"""A worker process: django-q2's worker contract (cluster/runner.py), fed by the dispatcher
through a pipe of its own (`TaskPipe`, its task queue) and answering on the same pipe
(`ResultPipe`, its result queue). With the PostgreSQL broker the worker holds its cluster's
key (WorkerKey) and starts a job only while it holds it."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import hashlib
import hmac
import os
import pickle
import pydoc
import signal
import time
import zlib
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from django.conf import settings
from django.utils.encoding import force_bytes
from django_q.conf import Conf, logger
from django_q.signals import post_execute
from django_q.signing import BadSignature
from django_q.utils import get_func_repr
from picklefield.fields import dbsafe_encode

from pgbroker import history
from pgbroker.broker import alias
from pgbroker.cluster import runner
from pgbroker.cluster.messages import (
    STOP,
    BadPackage,
    Done,
    KeyLost,
    NoSlotForKey,
    RunJob,
    Started,
)
from pgbroker.cluster.workerkey import WorkerKey
from pgbroker.cluster.writer import result_line
from pgbroker.connection import NoSlot

BAD_PACKAGE = ("the task package could not be read ({error}): it was signed with another "
               "SECRET_KEY or Q_CLUSTER name, or it is not a django-q2 package")
KEY_LOST_EXIT = 75


@dataclass(frozen=True)
class WorkerSetup:
    """What a job source asks of its workers."""

    owner: int | None = None  # hold this cluster key while running (the PostgreSQL source)
    rows: bool = False  # build django_q_task rows here (the PostgreSQL source COPYs them)
    # A source whose liveness is a renewed lease (Redis): shared with the dispatcher, the
    # monotonic time its cluster last proved alive, and how old that may be before a worker
    # must not start (or, after a SIGSTOP, go on with) a job: another cluster may have it.
    alive_at: Any = None  # a multiprocessing RawValue("d"), written by the dispatcher
    alive_for: float = 0.0

    def alive(self) -> bool:
        return self.alive_at is None or time.monotonic() - self.alive_at.value <= self.alive_for

    def history_name(self, job_id: int | str, task: dict[str, Any]) -> str:
        return f"pg:{job_id}" if self.owner is not None else f"q:{task['id']}"


def die_with_parent(parent: int) -> None:
    """Linux: receive SIGKILL when the parent exits (a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl: follow it now
        os._exit(1)


def error_summary(result: object) -> str:
    text = str(result)
    return text if len(text) <= 2000 else text[:1000] + "\n...\n" + text[-1000:]


class PackageReader:
    """django-q2's `SignedPackage.loads` (the same HMAC check, the same errors) with the HMAC
    key derived once: django-q2 builds a Signer and derives its key for every package."""

    def __init__(self) -> None:
        secret = force_bytes(Conf.SECRET_KEY or settings.SECRET_KEY)
        salt = Conf.PREFIX or "django_q.core_signing.TimestampSigner"  # the Signer's default
        self.key = hashlib.sha256(force_bytes(salt + "signer") + secret).digest()

    def loads(self, package: str | bytes) -> Any:
        if isinstance(package, bytes):  # Redis gives bytes
            try:
                package = package.decode()
            except UnicodeDecodeError:
                raise BadSignature("the package is not text") from None
        signed, sep, signature = package.rpartition(":")
        if not sep:
            raise BadSignature('No ":" found in value')
        good = base64.urlsafe_b64encode(
            hmac.new(self.key, signed.encode(), hashlib.sha256).digest()).strip(b"=")
        if not hmac.compare_digest(signature.encode(), good):
            raise BadSignature(f'Signature "{signature}" does not match')
        value = signed.rpartition(":")[0].encode()  # less the timestamp (no max_age)
        compressed = value[:1] == b"."
        data = base64.urlsafe_b64decode(value[compressed:] + b"=" * (-len(value[compressed:]) % 4))
        return pickle.loads(zlib.decompress(data) if compressed else data)


class TaskPipe:
    """A worker's task queue: its own end of its own pipe (django-q2's worker reads .get())."""

    def __init__(self, conn: Connection, setup: WorkerSetup, key: WorkerKey | None,
                 results: ResultPipe) -> None:
        self.conn = conn
        self.setup = setup
        self.key = key
        self.results = results
        self.waiting: deque[RunJob | str] = deque()  # sent together, not started yet (or STOP)
        self.functions: dict[str, object] = {}
        self.recording = bool(history.directory())
        self.packages = PackageReader()
        self.running = ""  # the history's name of the job started last
        self.peeked: tuple[int | str, dict[str, Any]] | None = None
        self.attempt = 0  # of the job started last

    def check_after_stop(self) -> None:
        """After SIGCONT, with a lease-kept source (Redis): if the cluster has not proved
        alive recently enough, its jobs may be running elsewhere: exit before one more
        instruction of the job runs."""
        if not self.setup.alive():
            history.record("died", self.running, worker=os.getpid(), how="stopped, not alive")
            logger.critical("worker %s: its cluster did not prove alive while it was stopped; "
                            "exiting", os.getpid())
            os._exit(KEY_LOST_EXIT)

    def get(self) -> dict[str, Any] | str:
        while True:
            if self.waiting:
                message: object = self.waiting.popleft()
            else:
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    return STOP  # the dispatcher is gone
                if isinstance(message, list):
                    self.waiting.extend(message)
                    continue
            if message == STOP:
                return STOP
            assert isinstance(message, RunJob)
            job = message
            try:
                held = self.key is None or self.key.holds_for(int(job.job_id))
            except NoSlot as e:  # no session, no key: the job goes back unstarted
                if not self.results.send(NoSlotForKey(job.job_id, str(e))):
                    return STOP  # the dispatcher is gone
                continue
            if not held or not self.setup.alive():
                self.results.send(KeyLost(job.job_id))
                return STOP  # a new worker takes the next job with a key of its own
            try:
                task: dict[str, Any] = self._read(job)
            except (TypeError, BadSignature) as e:
                self.results.send(BadPackage(job.job_id, BAD_PACKAGE.format(error=e)))
                continue
            return self._started(task, job)

    def more(self, first: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        """Up to `limit` jobs of `first`'s function (keyword arguments only) waiting next in
        this pipe, started now with it (pgbroker.batching); anything else stays for get().
        A job tried before runs alone: one that kills its worker (a poison job) then takes no
        neighbour down with it again."""
        found: list[dict[str, Any]] = []
        name = first.get("func_name")
        if self.attempt > 1:
            return found  # tried before, maybe in a batch whose worker died: alone this time
        self._receive_waiting()
        while self.waiting and len(found) < limit and name:
            job = self.waiting[0]
            if not isinstance(job, RunJob) or job.attempt > 1:
                break  # STOP; or a job tried before, which runs alone
            try:
                task = self._read(job)
                if task["func"] != name or task.get("args"):
                    break
                held = self.key is None or self.key.holds_for(int(job.job_id))
            except (TypeError, BadSignature, NoSlot):
                break  # get() says so, when its turn comes
            if not held or not self.setup.alive():
                break
            self.waiting.popleft()
            found.append(self._started(task, job))
        if found:  # the dispatcher charges them all if this worker dies now
            self.results.send(Started((first["ack_id"], *(t["ack_id"] for t in found)), limit + 1))
        return found

    def _receive_waiting(self) -> None:
        """What the dispatcher already sent, without waiting for more."""
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if isinstance(message, list):
                    self.waiting.extend(message)
                else:
                    self.waiting.append(message)
        except (EOFError, OSError):
            self.waiting.append(STOP)

    def _read(self, job: RunJob) -> dict[str, Any]:
        """The job's package (read once, even when looked at twice)."""
        if self.peeked is not None and self.peeked[0] == job.job_id:
            return self.peeked[1]
        task: dict[str, Any] = self.packages.loads(job.package)
        self.peeked = (job.job_id, task)
        return task

    def _started(self, task: dict[str, Any], job: RunJob) -> dict[str, Any]:
        self.peeked = None
        self.attempt = job.attempt
        task["cluster"] = Conf.CLUSTER_NAME
        task["ack_id"] = job.job_id
        self.running = self.setup.history_name(job.job_id, task)
        if self.recording:
            self._record_start(task, job)
        func = task["func"]
        if isinstance(func, str):  # django-q2's worker would import it for every task
            task["func_name"] = func
            task["func"] = self.functions.get(func) or self._locate(func)
        return task

    def _record_start(self, task: dict[str, Any], job: RunJob) -> None:
        waited = job.waited
        if waited is not None and job.claimed_t:  # due-to-claim (database) + claim-to-start
            waited += time.monotonic() - job.claimed_t
        owner = self.setup.owner
        history.start(self.setup.history_name(job.job_id, task), attempt=job.attempt,
                      owner=f"{owner:x}" if owner else None, waited=waited,
                      func=task["func"] if isinstance(task["func"], str)
                      else task.get("func_name"), cluster=Conf.CLUSTER_NAME)

    def _locate(self, name: str) -> object:
        func = pydoc.locate(name)
        if func is not None:
            self.functions[name] = func
        return func or name  # not found: the worker reports it as the task's failure


class ResultPipe:
    """A worker's result queue. Where the source writes rows itself (PostgreSQL), the worker
    prepares the row here, so the dispatcher only batches rows it does not have to build;
    a task that needs django-q2's monitor logic (a chain, a hook, a cached result, a
    post_execute listener, a save limit) goes back whole."""

    def __init__(self, conn: Connection, setup: WorkerSetup, key: WorkerKey | None) -> None:
        self.conn = conn
        self.setup = setup
        self.key = key

    def send(self, message: object) -> bool:
        """False: the dispatcher is gone."""
        try:
            self.conn.send(message)
            return True
        except OSError:
            return False

    def put(self, task: dict[str, Any]) -> None:
        job_id: int | str = task["ack_id"]
        success = bool(task["success"])
        if history.directory():
            history.record("end", self.setup.history_name(job_id, task), ok=success)
        if self.key is not None:
            self.key.done()
        ack = success or bool(task.get("ack_failure", False))
        error = "" if success else error_summary(task["result"])
        whole = (not self.setup.rows or Conf.SAVE_LIMIT > 0 or task.get("chain")
                 or task.get("hook") or task.get("cached") or post_execute.has_listeners())
        if whole:
            if "func_name" in task:  # as django-q2 stores it: the dotted path
                task["func"] = task.pop("func_name")
            self.conn.send(Done(job_id, success, ack, None, task, error))
            return
        row = None
        if task.get("save", Conf.SAVE_LIMIT >= 0) or not success:
            row = task_row(task, success=success)
        self.conn.send(Done(job_id, success, ack, row, None, error))


def task_row(task: dict[str, Any], *, success: bool) -> bytes:
    """A task's django_q_task row, in COPY's text format (pgbroker.cluster.writer)."""
    func = task.get("func_name") or get_func_repr(task["func"]) or ""
    return result_line((
        task["id"], str(task["name"])[:100], func[:256], None, pickled(task["args"]),
        pickled(task["kwargs"]), pickled(task["result"]), _short(task.get("group")),
        task["started"], task["stopped"], success, _short(task.get("cluster"))))


def pickled(value: object) -> str:
    return str(dbsafe_encode(value, False, None, False))


def _short(value: object) -> str | None:
    return None if value is None else str(value)[:100]


def key_lost(job: int | str | None, why: str) -> None:
    """A worker whose cluster's key is gone (WorkerKey): whatever it runs may be running
    elsewhere already, or soon. Exit now, in the middle of it; its dispatcher hands back the
    rest. (A SIGCONT handler calls this too: Python runs it before one more instruction of
    the job.)"""
    history.record("died", f"pg:{job}" if job is not None else "", worker=os.getpid(),
                   how=why)
    logger.critical("worker %s: %s; exiting", os.getpid(), why)
    os._exit(KEY_LOST_EXIT)


def worker_main(conn: Connection, timer: Synchronized[float], timeout: int | None, parent: int,
                close_fds: list[int], setup: WorkerSetup) -> None:
    die_with_parent(parent)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in close_fds:  # the dispatcher's database sockets and the other workers' pipes
        with contextlib.suppress(OSError):
            os.close(fd)
    key = None
    if setup.owner is not None:
        key = WorkerKey(alias=alias(), owner=setup.owner, on_lost=key_lost)
        check = key.check_after_stop
        signal.signal(signal.SIGCONT, lambda signum, frame: check())
    results = ResultPipe(conn, setup, key)
    tasks = TaskPipe(conn, setup, key, results)
    if setup.alive_at is not None:
        signal.signal(signal.SIGCONT, lambda signum, frame: tasks.check_after_stop())
    runner.run(tasks, results, timer, timeout)
