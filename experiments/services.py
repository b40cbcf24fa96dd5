"""Start experiments and run them to the end (the parent side of a run).

`start_experiment()` records the request; `execute()` starts the servers of its own the run
restarts (experiments.servers), creates the run's scratch database and starts the runner
(experiments.runner) in a process of its own, with the scratch database as its `default` and
the project's database as `results`; `launch()` does that in the background (the admin's start
button). Experiments run only where fault injection is on (FAULTS_ENABLED, which the
experiments app needs to be installed at all): the runner is told so, never switched on by
it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from common.db import database_url
from common.errors import OperationError
from devtools import lab, local_redis
from devtools.processes import alive
from experiments import servers
from experiments.models import Experiment, Status
from experiments.plan import Params, make_plan, params_for
from experiments.scratch import scratch_database

BASE_DIR = Path(__file__).resolve().parent.parent
ALREADY_RUNNING = ("experiment {id} is still running (pid {pid}): one at a time, they share "
                   "Redis and the machine")
# Redis database of an experiment's processes when they share the project's Redis: none of the
# others (0 the demo, 11 the peers bench, 12-15 the test passes, 14 the bench)
EXPERIMENT_REDIS_DB = 10
FAULTS_OFF = ("fault injection is off (FAULTS_ENABLED is false): an experiment injects faults, "
              "so it runs only where they are enabled")


class ExperimentError(OperationError):
    """An experiment that cannot be started or run."""


def start_experiment(*, preset: str | None = None, seed: int | None = None,
                     **overrides) -> Experiment:
    """Validate and record a run (status queued). The same seed gives the same schedule."""
    seed = int.from_bytes(os.urandom(4), "big") if seed is None else seed
    params = params_for(preset=preset, seed=seed, **overrides)
    make_plan(params)  # a plan that cannot be made is refused now, not in the background
    _switches()
    refused = servers.refusal(params)
    if refused:
        raise ExperimentError(refused)
    if params.hosts and os.geteuid() != 0:
        raise ExperimentError(f"{params.hosts} simulated host(s) need root (network "
                              "namespaces, devtools/lab.py): run it as root, or without --hosts")
    with transaction.atomic():
        for other in Experiment.objects.select_for_update().filter(
                status__in=[Status.QUEUED, Status.RUNNING]):
            if other.pid and alive(other.pid):
                raise ExperimentError(ALREADY_RUNNING.format(id=other.pk, pid=other.pid))
            if other.status == Status.RUNNING or other.pid:
                Experiment.objects.filter(pk=other.pk).update(
                    status=Status.FAILED, error="its process is gone", finished_at=timezone.now())
        return Experiment.objects.create(preset=preset or "", params=params.as_dict(), seed=seed)


def _switches() -> dict[str, str]:
    """What the runner's environment says of the switches: this process's own (the experiments
    app is installed here), which must have fault injection on: the runner's processes inject
    faults."""
    if not settings.FAULTS_ENABLED:
        raise ExperimentError(FAULTS_OFF)
    return {"FAULTS_ENABLED": "1", "EXPERIMENTS_ENABLED": "1"}


def command_line(experiment: Experiment) -> str:
    """The command that repeats this run exactly (same parameters, same seed)."""
    params = Params.from_dict(experiment.params)
    base = params_for(preset=experiment.preset, seed=params.seed) if experiment.preset else None
    args = [f"--preset {experiment.preset}"] if experiment.preset else []
    for key, value in params.as_dict().items():
        if key in ("seed", "script") or (base is not None and getattr(base, key) == value):
            continue
        args.append(f"--{key.replace('_', '-')} {value}")
    args.append(f"--seed {params.seed}")
    return "manage.py experiment " + " ".join(args)


def _fail(experiment: Experiment, error: str) -> ExperimentError:
    Experiment.objects.filter(pk=experiment.pk).update(status=Status.FAILED, error=error,
                                                       finished_at=timezone.now())
    return ExperimentError(error)


def execute(experiment: Experiment, *, out=None) -> Experiment:
    """Run it to the end in a runner process; returns the row as the runner left it. With
    simulated hosts, on the lab (devtools/lab.py), brought up for the run and removed after."""
    hosts = Params.from_dict(experiment.params).hosts
    if not hosts:
        return _execute(experiment, out=out)
    try:
        state = lab.up(workers=hosts, processes=False)
    except lab.LabError as e:
        raise _fail(experiment, f"the lab did not come up: {e}") from e
    try:
        return _execute(experiment, out=out, lab_state=state)
    finally:
        lab.down(quiet=True)


def _execute(experiment: Experiment, *, out=None, lab_state: dict | None = None) -> Experiment:
    out = out or sys.stdout
    try:
        switches = _switches()
    except ExperimentError as e:
        raise _fail(experiment, str(e)) from e
    try:
        with servers.started(Params.from_dict(experiment.params), out=out) as own:
            connection.close()  # nothing to hold open while the runner works
            return _run(experiment, own=own, switches=switches, out=out, lab_state=lab_state)
    except servers.ServersError as e:
        raise _fail(experiment, str(e)) from e


def _run(experiment: Experiment, *, own: servers.Own, switches: dict[str, str], out,
         lab_state: dict | None) -> Experiment:
    name = f"reliable_experiment_{experiment.pk}"
    if lab_state:  # the lab's own database and Redis, fresh for this run
        scratch, redis = lab.database_url(lab_state), lab.redis_url(lab_state)
    else:
        try:
            scratch = scratch_database(name, base=own.pg_url)
        except Exception as e:
            raise _fail(experiment, f"could not create the scratch database {name}: "
                                    f"{e}") from e
        redis = local_redis.with_db(own.redis_url or settings.REDIS_URL, EXPERIMENT_REDIS_DB)
    env = {**os.environ, "DATABASE_URL": scratch, "RESULTS_DATABASE_URL": database_url(),
           "REDIS_URL": redis, **switches, **own.env(), "RECONCILE_AFTER_SECONDS": "2",
           "SAGA_LEASE_SECONDS": "2", "Q_TIMEOUT": "10", "OUTBOX_POLL_SECONDS": "1",
           "LOG_LEVEL": "ERROR", "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen([sys.executable, "manage.py", "experiment", "--runner",
                           str(experiment.pk)], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as runner:
        assert runner.stdout is not None  # stdout=PIPE
        for line in runner.stdout:  # its progress, passed on to whoever asked
            out.write(line)
            out.flush()
        code = runner.wait()
    experiment.refresh_from_db()
    if code != 0 and experiment.status != Status.FAILED:
        Experiment.objects.filter(pk=experiment.pk).update(
            status=Status.FAILED, finished_at=timezone.now(),
            error=f"the runner exited with status {code}; see var/experiments/{experiment.pk}/")
        experiment.refresh_from_db()
    if lab_state:
        pass  # the lab's database goes with the lab
    elif experiment.passed:
        with contextlib.suppress(Exception):  # a leftover scratch database is only disk space
            scratch_database(name, drop_only=True, base=own.pg_url)
    else:
        where = (f" (on the experiment's own PostgreSQL, stopped: LOCAL_PG_DIR={own.pg} "
                 "python3 devtools/local_postgres.py start)" if own.pg else "")
        Experiment.objects.filter(pk=experiment.pk).update(
            error=(experiment.error + "\n" if experiment.error else "")
            + f"its scratch database is kept for a look: {scratch}{where}")
        experiment.refresh_from_db()
    return experiment


def launch(experiment: Experiment) -> int:
    """Run it in the background (the admin's start button); returns the pid."""
    log_dir = BASE_DIR / "var" / "experiments" / str(experiment.pk)
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "experiment.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "manage.py", "experiment", "--id",
                                 str(experiment.pk)], cwd=BASE_DIR, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    Experiment.objects.filter(pk=experiment.pk).update(pid=proc.pid)
    return proc.pid


def prune_experiments(cutoff, batch: int) -> int:
    """Retention: up to `batch` experiments that finished before `cutoff`, with their folder
    of logs and histories (var/experiments/ID)."""
    import shutil

    ids = list(Experiment.objects.filter(finished_at__lt=cutoff).order_by("finished_at")
               .values_list("pk", flat=True)[:batch])
    for pk in ids:
        shutil.rmtree(BASE_DIR / "var" / "experiments" / str(pk), ignore_errors=True)
    Experiment.objects.filter(pk__in=ids).delete()
    return len(ids)
