"""An experiment restarts only the servers it started (experiments.servers): a PostgreSQL and a
Redis of its own, never the project's. The project's servers here, the project-local ones this
suite runs on, are the servers the experiment treats as not its own; a run refuses a restart
on anything else before it starts."""

import shutil

import psycopg
import pytest
import redis

from common.db import connection_params
from devtools import local_postgres, local_redis
from experiments import servers, services
from experiments.models import Experiment
from experiments.plan import Event, params_for
from experiments.runner import Runner
from jobs.queues import redis_queue

pytestmark = pytest.mark.skipif(
    not (local_postgres.available() and local_redis.available()),
    reason="needs PostgreSQL's server programs and redis-server for the experiment's own")


def test_a_plan_that_restarts_servers_gets_its_own_and_one_that_does_not_gets_none():
    assert servers.wanted(params_for(preset="smoke", seed=1)) == servers.Own(
        pg=servers.PG_DIR, redis=servers.REDIS_DIR)
    assert servers.wanted(params_for(preset="talk", seed=1)) == servers.Own()
    assert servers.wanted(params_for(preset=None, seed=1, signups=5, pg_restarts=2)) == \
        servers.Own(pg=servers.PG_DIR)
    # the lab's hosts are brought up for the run: restarting them is restarting its own
    assert servers.wanted(params_for(preset="jepsen", seed=1)) == servers.Own()
    # their files are not the project's servers'
    assert local_postgres.cluster(servers.PG_DIR).data_dir != local_postgres.cluster().data_dir
    assert local_redis.server(servers.REDIS_DIR).socket != local_redis.server().socket


def _runner(params, monkeypatch, own: servers.Own) -> Runner:
    """A runner for an experiment not stored anywhere (its row is never written here), told
    by its environment which servers are its own, as its parent tells it."""
    for name, value in own.env().items():
        monkeypatch.setenv(name, value)
    runner = Runner(Experiment(pk=2_000_000_000, params=params.as_dict(), seed=params.seed))
    shutil.rmtree(runner.log_dir)
    return runner


@pytest.mark.parametrize(("restarts", "what"), [({"pg_restarts": 1}, "PostgreSQL"),
                                                ({"redis_restarts": 2}, "Redis")])
def test_a_runner_without_servers_of_its_own_refuses_the_restart_before_anything_runs(
    monkeypatch, restarts, what
):
    params = params_for(preset=None, seed=1, signups=5, **restarts)
    runner = _runner(params, monkeypatch, servers.Own())
    n = next(iter(restarts.values()))
    with pytest.raises(RuntimeError) as refused:
        runner.run()  # refused before its row is touched or a process started
    assert str(refused.value) == (
        f"the plan restarts {what} {n} time(s), and this run has no {what} of its own: an "
        "experiment restarts only the servers it started (experiments/servers.py)")
    assert not [p for p in runner.processes if p.pid]
    kind = "pg_restart" if what == "PostgreSQL" else "redis_restart"
    with pytest.raises(RuntimeError, match="has no .* of its own"):  # and its restarts too
        runner._inject(Event(at=0.0, kind=kind))
    assert not runner.recorder.timeline


def test_a_plan_whose_servers_cannot_be_started_is_refused_before_it_is_recorded(
    db, monkeypatch
):
    monkeypatch.setattr(local_postgres, "available", lambda: False)
    with pytest.raises(services.ExperimentError, match="^PostgreSQL restarts need a PostgreSQL "
                       "of the experiment's own, and PostgreSQL's server programs"):
        services.start_experiment(preset="smoke", seed=1)
    services.start_experiment(preset="talk", seed=1)  # restarts nothing: it may run
    monkeypatch.setattr(local_redis, "available", lambda: False)
    with pytest.raises(services.ExperimentError, match="^Redis restarts need a Redis"):
        services.start_experiment(preset=None, seed=1, signups=5, redis_restarts=1)
    assert Experiment.objects.count() == 1


def test_an_experiment_needs_fault_injection_on(db, settings):
    settings.FAULTS_ENABLED = False
    with pytest.raises(services.ExperimentError) as refused:
        services.start_experiment(preset="talk", seed=1)
    assert str(refused.value) == services.FAULTS_OFF
    assert not Experiment.objects.exists()


def _pg_started_at(params: dict) -> str:
    with psycopg.connect(**params) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        assert row is not None
        return str(row[0])


def _redis_run_id(client: redis.Redis) -> str:
    return client.info("server")["run_id"]


def test_the_restarts_hit_the_experiments_own_servers_never_the_projects(
    transactional_db, monkeypatch
):
    params = params_for(preset=None, seed=1, signups=5, pg_restarts=1, redis_restarts=1)
    project_pg, project_redis = connection_params(), redis_queue().connection
    before = _pg_started_at(project_pg), _redis_run_id(project_redis)
    with servers.started(params) as own:
        assert own == servers.Own(pg=servers.PG_DIR, redis=servers.REDIS_DIR)
        own_pg = {"host": str(local_postgres.cluster(own.pg).socket_dir),
                  "port": local_postgres.cluster(own.pg).port, "user": "postgres",
                  "dbname": "postgres"}
        own_redis = redis.Redis.from_url(own.redis_url)
        own_before = _pg_started_at(own_pg), _redis_run_id(own_redis)
        runner = _runner(params, monkeypatch, own)
        runner._inject(Event(at=0.0, kind="pg_restart"))
        runner._inject(Event(at=0.0, kind="redis_restart"))
        own_after = _pg_started_at(own_pg), _redis_run_id(own_redis)
        assert [(e["kind"], e["note"]) for e in runner.recorder.timeline] == [
            ("pg_restart", "immediate mode (a crash and recovery) of the run's own PostgreSQL"),
            ("redis_restart", "the run's own Redis stopped and started")]
    assert own_after[0] != own_before[0]
    assert own_after[1] != own_before[1]
    # the project's PostgreSQL and Redis, which the experiment did not start, ran on
    assert (_pg_started_at(project_pg), _redis_run_id(project_redis)) == before
    # and the experiment's own are stopped with it
    assert not local_redis.is_running(local_redis.server(servers.REDIS_DIR))
    bindir = local_postgres.find_bindir()
    assert bindir is not None
    assert not local_postgres.is_running(local_postgres.cluster(servers.PG_DIR), bindir)
