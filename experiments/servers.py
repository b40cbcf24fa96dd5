"""The PostgreSQL and the Redis an experiment restarts are its own.

A plan with PostgreSQL restarts puts its scratch database on a PostgreSQL of its own (files
under var/experiment-pg, devtools/local_postgres.py); a plan with Redis restarts uses a Redis
of its own (var/experiment-redis, devtools/local_redis.py). The experiment starts them for its
run and stops them after; the runner is told which they are (its environment) and restarts
those only. The project's servers, the project-local ones and those given by DATABASE_URL and
REDIS_URL, are never restarted: a plan that restarts nothing puts its scratch database beside
the project's and uses Redis database 10 (experiments.services.EXPERIMENT_REDIS_DB). On the
lab's simulated hosts (`--hosts`), the database and Redis hosts are the lab's, brought up for
the run: those are restarted.

Where no server of its own can be started (the programs are missing), a plan that restarts
one is refused in one line before anything runs: a run that skipped its restarts would
report its targets met on less than was asked, and its seed would no longer say what ran."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from devtools import local_postgres, local_redis
from experiments.plan import Params

PG_DIR = "var/experiment-pg"
REDIS_DIR = "var/experiment-redis"
# The runner's environment: the directory of each server it may restart ("": none).
PG_ENV, REDIS_ENV = "EXPERIMENT_OWN_PG", "EXPERIMENT_OWN_REDIS"
NO_PG = ("PostgreSQL restarts need a PostgreSQL of the experiment's own, and PostgreSQL's "
         "server programs (initdb, pg_ctl) are not installed: install them, or --pg-restarts 0")
NO_REDIS = ("Redis restarts need a Redis of the experiment's own, and redis-server is not "
            "installed: install it, or --redis-restarts 0")
NOT_OURS = ("the plan restarts {what} {n} time(s), and this run has no {what} of its own: an "
            "experiment restarts only the servers it started (experiments/servers.py)")


class ServersError(Exception):
    """A server of its own that did not start; the message is one line."""


@dataclass(frozen=True)
class Own:
    """The servers this run started, by directory ("": none)."""

    pg: str = ""
    redis: str = ""

    @property
    def pg_url(self) -> str:
        return local_postgres.cluster(self.pg).url if self.pg else ""

    @property
    def redis_url(self) -> str:
        return local_redis.server(self.redis).url if self.redis else ""

    def env(self) -> dict[str, str]:
        return {PG_ENV: self.pg, REDIS_ENV: self.redis}

    @classmethod
    def from_env(cls, environ) -> Own:
        return cls(pg=environ.get(PG_ENV, ""), redis=environ.get(REDIS_ENV, ""))


def wanted(params: Params) -> Own:
    """The servers of its own a run of these parameters needs."""
    if params.hosts:  # the lab's hosts, started for the run
        return Own()
    return Own(pg=PG_DIR if params.pg_restarts else "",
               redis=REDIS_DIR if params.redis_restarts else "")


def refusal(params: Params) -> str | None:
    """Why a run of these parameters cannot start here, in one line; None when it can."""
    own = wanted(params)
    if own.pg and not local_postgres.available():
        return NO_PG
    if own.redis and not local_redis.available():
        return NO_REDIS
    return None


def not_ours(params: Params, own: Own) -> str | None:
    """The runner's own check: a restart the plan asks for, on a server this run did not
    start. None when every restart it asks for is of its own servers (or the lab's)."""
    if params.hosts:
        return None
    if params.pg_restarts and not own.pg:
        return NOT_OURS.format(what="PostgreSQL", n=params.pg_restarts)
    if params.redis_restarts and not own.redis:
        return NOT_OURS.format(what="Redis", n=params.redis_restarts)
    return None


@contextlib.contextmanager
def started(params: Params, *, out=None) -> Iterator[Own]:
    """Start the servers of its own this run needs (their lines on `out`), stop them after."""
    own = wanted(params)
    with contextlib.redirect_stdout(out or sys.stdout):
        try:
            if own.pg:
                local_postgres.start(own.pg)
            if own.redis:
                local_redis.start(own.redis)
        except (local_postgres.LocalPostgresError, local_redis.LocalRedisError, OSError,
                subprocess.CalledProcessError) as e:
            _stop(own)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ServersError(f"could not start the experiment's own servers: {first}") from e
    try:
        yield own
    finally:
        with contextlib.redirect_stdout(out or sys.stdout):
            _stop(own)


def _stop(own: Own) -> None:
    if own.redis:
        with contextlib.suppress(local_redis.LocalRedisError):
            local_redis.stop(own.redis, quiet=True)
    if own.pg:
        with contextlib.suppress(local_postgres.LocalPostgresError, OSError,
                                 subprocess.CalledProcessError):
            local_postgres.stop(own.pg, quiet=True)
