"""Run one experiment inside its own process, on its scratch database (`default` here):
start the real processes, spread the plan's load over time, inject its events, wait for the
system to quiesce, check the whole history, and record it all in the project's database (the
`results` alias). `manage.py experiment` starts this process (experiments.services). It restarts
only the servers its parent started for it, named in its environment (experiments.servers), or
the lab's."""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.utils import timezone

from devtools import lab, local_postgres, local_redis
from experiments import servers
from experiments.models import Experiment, Status
from experiments.plan import PAUSE_SECONDS, Event, Params, Plan, Signup, Trip, make_plan
from experiments.processes import Supervised

RESULTS = "results"
SAMPLE_EVERY = 0.5
STALL_LIMIT = 5.0  # seconds without progress while work is pending: a failed run
QUIESCE_GRACE = 60.0
RECONCILE_EVERY = 1.0
DB_ERRORS = (OperationalError, InterfaceError, DatabaseError, psycopg.Error)


def _reset_connections() -> None:
    from common import sideconn

    for conn in connections.all():
        with contextlib.suppress(Exception):
            conn.close()
    with contextlib.suppress(Exception):
        sideconn.close()


def retrying(fn: Callable, *, what: str, timeout: float = 60.0):
    """Call fn, again and again while the database is restarting (up to `timeout` s)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except DB_ERRORS:
            _reset_connections()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Recorder:
    """The experiment's row in the project's database, written as the run goes."""

    def __init__(self, experiment_id: int) -> None:
        self.id = experiment_id
        self.timeline: list[dict] = []
        self.samples: list[dict] = []
        self.last_write = 0.0

    def update(self, **fields) -> None:
        def write():
            Experiment.objects.using(RESULTS).filter(pk=self.id).update(**fields)
        retrying(write, what="recording the experiment")

    def event(self, t: float, kind: str, target: str = "", pid: int | None = None,
              note: str = "") -> None:
        self.timeline.append({"t": round(t, 3), "kind": kind, "target": target, "pid": pid,
                              "note": note})

    def flush(self, *, progress: float, phase: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_write > 1.0:
            self.last_write = now
            self.update(timeline=self.timeline, samples=self.samples, progress=progress,
                        phase=phase)


class Runner:
    def __init__(self, experiment: Experiment, *, out=sys.stdout) -> None:
        self.experiment = experiment
        self.params = Params.from_dict(experiment.params)
        self.plan: Plan = make_plan(self.params)
        self.rng = random.Random(self.params.seed ^ 0x5EED)  # which pid a kill hits
        self.recorder = Recorder(experiment.pk)
        self.out = out
        self.log_dir = Path(settings.BASE_DIR) / "var" / "experiments" / str(experiment.pk)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.mail_dir = self.log_dir / "mail"
        shutil.rmtree(self.mail_dir, ignore_errors=True)  # a test database reuses ids
        self.mail_dir.mkdir()
        env = {**os.environ, "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
               "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
               "EMAIL_FILE_PATH": str(self.mail_dir)}
        env.pop("RESULTS_DATABASE_URL", None)
        self.history_dir = self.log_dir / "history"
        shutil.rmtree(self.history_dir, ignore_errors=True)
        env["JOB_HISTORY_DIR"] = str(self.history_dir)
        env["STATUS_DIR"] = str(self.log_dir / "run")  # not make run's health files
        self.lab = bool(self.params.hosts)
        self.own = servers.Own.from_env(os.environ)  # the servers it may restart
        redis = {"Q_CLUSTER_NAME": settings.REDIS_CLUSTER}
        if self.lab:  # every worker host: both clusters; the relay host: relay and recoverer
            workers = [f"w{i}" for i in range(1, self.params.hosts + 1)]
            self.pg_clusters = [self._on(h, f"qcluster-{h}", ["qcluster"], env)
                                for h in workers]
            self.redis_clusters = [self._on(h, f"qcluster-redis-{h}", ["qcluster"],
                                            {**env, **redis}) for h in workers]
            self.relay = self._on("relay", "relay", ["relay_outbox", "--follow"], env)
            self.recoverer = self._on("relay", "recoverer", ["recover_sagas", "--follow"], env)
        else:
            self.pg_clusters = [Supervised(f"qcluster-{c}", ["qcluster"], env=env,
                                           log_dir=self.log_dir) for c in "ab"]
            self.redis_clusters = [Supervised("qcluster-redis", ["qcluster"],
                                              env={**env, **redis}, log_dir=self.log_dir)]
            self.relay = Supervised("relay", ["relay_outbox", "--follow"], env=env,
                                    log_dir=self.log_dir)
            self.recoverer = Supervised("recoverer", ["recover_sagas", "--follow"], env=env,
                                        log_dir=self.log_dir)
        self.processes = [*self.pg_clusters, *self.redis_clusters, self.relay, self.recoverer]
        self.paused: list[tuple[float, int]] = []  # (resume at, pid)
        self.group_paused: list[tuple[float, int]] = []  # (resume at, process group)
        self.cut: dict[str, float] = {}  # host: heal at
        self.t0 = 0.0
        self.faults: Counter[str] = Counter()
        self.retried_db = 0

    def _on(self, host: str, name: str, args: list[str], env: dict[str, str]) -> Supervised:
        """A process on one of the lab's hosts, with that host's name (and its clock)."""
        env = {**env, "HOST_NAME": host}
        if host == self.plan.skewed_host:
            env.update(lab.faketime_env(self.params.clock_skew_s))
        return Supervised(name, args, env=env, log_dir=self.log_dir,
                          prefix=lab.ns_prefix(host), host=host)

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> dict:
        refused = servers.not_ours(self.params, self.own)
        if refused:  # before anything runs
            raise RuntimeError(refused)
        self.recorder.update(status=Status.RUNNING, started_at=timezone.now(), pid=os.getpid(),
                             phase="starting")
        call_command("migrate", verbosity=0)
        from jobs.queues import redis_queue

        redis_queue().connection.flushdb()
        for proc in self.processes:
            proc.start()
        if self.plan.skewed_host:
            self.recorder.event(0.0, "clock_skew", self.plan.skewed_host,
                                note=f"its wall clock {self.params.clock_skew_s:+g} s "
                                     "(faketime) for the whole run")
        started = time.monotonic()
        while not all(p.log_has("running.") for p in (*self.pg_clusters, *self.redis_clusters)):
            if time.monotonic() - started > 60:
                raise RuntimeError("the clusters did not start within 60 s; see "
                                   f"{self.log_dir}")
            time.sleep(0.1)
        try:
            self.t0 = time.monotonic()
            self._load()
            quiesced_after = self._quiesce()
            result = self._check(quiesced_after)
        finally:
            for _, pid in self.paused:  # a paused dispatcher cannot stop
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            for _, group in self.group_paused:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGCONT)
            for host in self.cut:
                lab.heal(host)
            for proc in self.processes:
                proc.stop()
        return result

    def _elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _load(self) -> None:
        from sagas.definitions import TRIP
        from sagas.services import start_saga
        from users.services import NameTaken, enqueue_signup

        plan = self.plan
        spread = plan.load_seconds * 0.9
        styles = self.params.styles
        # every trip once in each style, at the same moment; which style goes first alternates
        work: list[tuple[float, Signup | tuple[Trip, str]]] = [
            (i / max(len(plan.signups), 1) * spread, s) for i, s in enumerate(plan.signups)]
        work += [(i / max(len(plan.trips), 1) * spread, (t, style))
                 for i, t in enumerate(plan.trips)
                 for style in (styles if i % 2 == 0 else styles[::-1])]
        work.sort(key=lambda w: w[0])
        events = list(plan.events)
        done = 0
        next_sample = 0.0
        while work or events or self.paused or self.group_paused or self.cut:
            now = self._elapsed()
            while work and work[0][0] <= now:
                _, item = work.pop(0)
                if isinstance(item, Signup):
                    def enqueue(item=item):
                        with contextlib.suppress(NameTaken):
                            enqueue_signup(name=item.name, mode=item.mode, fail=item.fail,
                                           crash=item.crash)
                    retrying(enqueue, what="a signup")
                else:
                    trip, style = item
                    retrying(lambda trip=trip, style=style: start_saga(
                        kind=TRIP.kind, payload={"customer": trip.customer},
                        fault_plan=dict(trip.faults), style=style), what="a trip")
                done += 1
            while events and events[0].at <= now:
                self._inject(events.pop(0))
            self._resume_paused(now)
            self._supervise()
            if now >= next_sample:
                next_sample = now + SAMPLE_EVERY
                self._sample()
                total = len(plan.signups) + len(plan.trips) * len(styles)
                progress = 0.8 * done / max(total, 1)
                self.recorder.flush(progress=progress, phase="load")
                self._progress(progress, f"load {done:,}/{total:,}, "
                                         f"{len(self.recorder.timeline)} faults")
            time.sleep(0.01)

    def _quiesce(self) -> float:
        """Wait until nothing is left to do (bounded); returns seconds after the load."""
        load_end = self._elapsed()
        deadline = load_end + QUIESCE_GRACE + self.plan.load_seconds
        next_reconcile = 0.0
        quiet_since = None
        while True:
            now = self._elapsed()
            self._supervise()
            sample = self._sample()
            if now >= next_reconcile:
                next_reconcile = now + RECONCILE_EVERY
                self._reconcile()
            if sample["pending"] == 0:
                quiet_since = quiet_since or now
                if now - quiet_since >= 1.0:
                    return round(quiet_since - load_end, 1)
            else:
                quiet_since = None
            if now > deadline:
                return math.inf
            self.recorder.flush(progress=0.8 + 0.2 * min(1.0, (now - load_end)
                                                         / max(deadline - load_end, 1)),
                                phase="quiescing")
            self._progress(0.8, "quiescing, waiting for: " + (", ".join(
                f"{k} {v}" for k, v in sample["waiting"].items()) or "nothing"))
            time.sleep(SAMPLE_EVERY)

    # --- faults ------------------------------------------------------------------------------

    def _inject(self, event: Event) -> None:
        t = self._elapsed()
        if event.kind == "kill":
            proc, what = self._kill_target(event.target)
            pid = proc.kill(what, self.rng) if proc else None
            self.faults[f"kill {event.target}"] += 1
            # the time it was done (the job history's checker ends the victims' attempts then)
            self.recorder.event(self._elapsed(), "kill", event.target, pid,
                                f"SIGKILL {proc.name} {what}" if proc and pid
                                else "nothing to hit")
        elif event.kind == "pg_restart" and self.lab:
            self.faults["pg_restart"] += 1
            lab.restart_postgres(mode="immediate")
            _reset_connections()
            self.recorder.event(t, "pg_restart", "db", note="immediate mode on the db host")
        elif event.kind == "pg_restart":  # the PostgreSQL started for this run, never another
            if not self.own.pg:  # run() refused such a plan already
                raise RuntimeError(servers.not_ours(self.params, self.own))
            self.faults["pg_restart"] += 1
            local_postgres.restart(self.own.pg, mode="immediate")
            _reset_connections()
            self.recorder.event(t, "pg_restart", "db", note="immediate mode (a crash and "
                                "recovery) of the run's own PostgreSQL")
        elif event.kind == "terminate":
            def terminate() -> int:
                with connections["default"].cursor() as cur:
                    cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE datname = current_database() "
                                "AND pid <> pg_backend_pid()")
                    return cur.fetchone()[0]
            n = retrying(terminate, what="terminating backends")
            self.faults["terminate"] += 1
            self.recorder.event(t, "terminate", note=f"{n} sessions terminated")
        elif event.kind == "pause":
            proc = self.rng.choice(self.pg_clusters)
            pid = proc.dispatcher()
            ended = 0
            if pid:
                os.kill(pid, signal.SIGSTOP)
                self.paused.append((self._elapsed() + PAUSE_SECONDS, pid))
                ended = retrying(lambda: end_dispatcher_session(pid), what="ending a session")
            self.faults["pause"] += 1
            self.recorder.event(t, "pause", proc.name, pid,
                                f"SIGSTOP its dispatcher for {PAUSE_SECONDS:g} s, "
                                f"{ended} session of it ended")
        elif event.kind == "partition":
            host, peer, way = event.target.split()
            if host in self.cut:
                self.recorder.event(t, "partition", host, note="skipped: already cut off")
                return
            lab.partition(host, peer=peer, way=way)
            self.cut[host] = self._elapsed() + self.params.partition_s
            self.faults["partition"] += 1
            self.recorder.event(t, "partition", host, note=f"from {peer}, {way} way(s), "
                                                          f"{self.params.partition_s:g} s")
        elif event.kind == "group_pause":
            proc = next(p for p in self.pg_clusters if p.host == event.target)
            group = proc.pid
            if (group is None or not proc.running()
                    or any(g == group for _, g in self.group_paused)):
                self.recorder.event(t, "group_pause", event.target, note="nothing to pause")
                return
            os.killpg(group, signal.SIGSTOP)
            self.group_paused.append((self._elapsed() + self.params.group_pause_s, group))
            self.faults["group_pause"] += 1
            self.recorder.event(t, "group_pause", event.target, group,
                                f"SIGSTOP of its whole cluster for {self.params.group_pause_s:g} s")
        elif event.kind == "redis_restart" and self.lab:
            lab.restart_redis()
            self.faults["redis_restart"] += 1
            self.recorder.event(t, "redis_restart", "redis", note="stopped and started")
        elif event.kind == "redis_restart":  # the Redis started for this run, never another
            if not self.own.redis:  # run() refused such a plan already
                raise RuntimeError(servers.not_ours(self.params, self.own))
            local_redis.stop(self.own.redis, quiet=True)
            local_redis.start(self.own.redis)
            self.faults["redis_restart"] += 1
            self.recorder.event(t, "redis_restart", "redis",
                                note="the run's own Redis stopped and started")

    def _kill_target(self, target: str) -> tuple[Supervised | None, str]:
        if target in ("worker", "dispatcher", "cluster"):
            return self.rng.choice(self.pg_clusters), target
        if target.startswith("redis-"):
            return self.rng.choice(self.redis_clusters), target.removeprefix("redis-")
        return {"relay": self.relay, "recoverer": self.recoverer}.get(target), "process"

    def _resume_paused(self, now: float) -> None:
        for item in list(self.paused):
            if item[0] <= now:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(item[1], signal.SIGCONT)
                self.paused.remove(item)
        for item in list(self.group_paused):
            if item[0] <= now:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(item[1], signal.SIGCONT)
                self.group_paused.remove(item)
                self.recorder.event(now, "resume", next(
                    (p.host for p in self.pg_clusters if p.pid == item[1]), ""), item[1],
                    "SIGCONT of the cluster")
        for host, heal_at in list(self.cut.items()):
            if heal_at <= now:
                lab.heal(host)
                del self.cut[host]
                self.recorder.event(now, "heal", host, note="the partition ends")

    def _supervise(self) -> None:
        for proc in self.processes:
            if proc.supervise():
                self.recorder.event(self._elapsed(), "restart", proc.name, proc.pid,
                                    "the supervisor started it again")

    def _reconcile(self) -> None:
        from users.services import reconcile_welcome_emails

        result = retrying(lambda: reconcile_welcome_emails(
            older_than=settings.RECONCILE_AFTER_SECONDS), what="reconciling")
        if result.republished or result.reenqueued:
            self.recorder.event(self._elapsed(), "reconcile", note=str(result))

    # --- measuring ---------------------------------------------------------------------------

    def _sample(self) -> dict:
        from jobs.selectors import queue_drained, redis_status
        from outbox.models import OutboxMessage
        from sagas.models import Saga
        from users.models import EmailSend, User

        def read() -> dict:
            redis = redis_status()
            users = User.objects.exclude(signup_mode="").count()
            waiting = {
                "queue": 0 if queue_drained() else 1,
                "outbox": OutboxMessage.objects.pending().count(),
                "sagas": Saga.objects.active().count(),
                "redis": redis.depth or 0,
                "signups": max(0, len(self.plan.signups) - users),
                # outbox and que users with no email yet: on their way, or lost by a store
                # until reconciliation enqueues them again
                "emails": User.objects.filter(signup_mode__in=["outbox", "que"],
                                              email_sends__isnull=True).count(),
                "redis_down": 0 if redis.up else 1,
            }
            return {"t": round(self._elapsed(), 2), "users": users,
                    "emails": EmailSend.objects.count(),
                    "sagas_done": Saga.objects.exclude(pk__in=Saga.objects.active()).count(),
                    "pending": sum(waiting.values()),
                    "waiting": {k: v for k, v in waiting.items() if v}}
        sample = retrying(read, what="sampling")
        self.recorder.samples.append(sample)
        return sample

    def _progress(self, fraction: float, text: str) -> None:
        width = 30
        filled = int(width * min(max(fraction, 0.0), 1.0))
        bar = "#" * filled + "." * (width - filled)
        line = f"[{bar}] {fraction:4.0%} {self._elapsed():6.1f} s {text}"
        if self.out.isatty():
            self.out.write("\r" + line[:118].ljust(118))
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def _check(self, quiesced_after: float) -> dict:
        from experiments.checks import check_history

        return retrying(lambda: check_history(
            plan=self.plan, mail_dir=self.mail_dir, samples=self.recorder.samples,
            timeline=self.recorder.timeline, faults=self.faults,
            restarts={p.name: p.restarts for p in self.processes},
            quiesced_after=quiesced_after, stall_limit=STALL_LIMIT,
            history_dir=self.history_dir, t0=self.t0), what="checking")


END_DISPATCHER_SESSION = """
SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l
  JOIN pg_stat_activity a ON a.pid = l.pid
  JOIN pgbroker_cluster c ON ((l.classid::bigint << 32) | l.objid::bigint) = c.owner
 WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND c.pid = %s
   AND a.application_name LIKE 'pgbroker %%' AND a.application_name <> 'pgbroker worker'
"""


def end_dispatcher_session(pid: int) -> int:
    """End the database session of the dispatcher `pid` (its workers' sessions stay): what a
    server or a proxy does to a peer it believes gone, while the process lives on, paused."""
    with connections["default"].cursor() as cur:
        cur.execute(END_DISPATCHER_SESSION, [pid])
        return cur.fetchone()[0]
