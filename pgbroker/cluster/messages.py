"""What travels between the dispatcher and its workers, each worker on a pipe of its own.

dispatcher -> worker: `RunJob`, one per job (several in a list), or `STOP` (django-q2's
worker ends on it).
worker -> dispatcher: `Done` for every job it ran (several in a list: the results of fast jobs
travel together); `BadPackage` for a job it could not read;
`NoSlotForKey` and `KeyLost` for a job it did not start (pgbroker.cluster.workerkey);
`Started` before it runs several jobs in one call (pgbroker.batching).

A worker also writes a shared number, its timer, which the worker loop (runner.py) maintains and
the dispatcher reads without a lock: `WorkerTimer`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple

STOP = "STOP"  # django-q2's worker reads tasks until this


class WorkerTimer(enum.IntEnum):
    """The values django-q2's worker writes into its timer besides a count of seconds.

    A positive value is the seconds the running job has left (its timeout + 3); the
    dispatcher counts it down every tick and kills the worker at 0 (django-q2's guard).
    """

    IDLE = -1  # between jobs, or running one without a timeout
    TIMED_OUT = 0  # the job timed out: its result was sent, the worker ends itself
    RECYCLED = -2  # Q_CLUSTER's recycle (or max_rss) was reached: the worker ends itself


@dataclass
class Claimed:
    """A job as the dispatcher holds it: taken from its source, not yet finished."""

    id: int | str  # the source's acknowledgement id (a pgbroker_job id on PostgreSQL)
    payload: str | bytes  # django-q2's signed task package (bytes from Redis)
    attempts: int  # this attempt's number, counting it (0 where the source does not count)
    last_error: str = ""
    waited: float | None = None  # seconds it had been due when claimed (the database's clock)
    claimed_t: float = 0.0  # when this process claimed it (monotonic)


class RunJob(NamedTuple):
    job_id: int | str
    package: str | bytes  # bytes from Redis
    attempt: int
    waited: float | None
    claimed_t: float


class Done(NamedTuple):
    """A job ran. `ack`: it is finished (it succeeded, or failed with ack_failure); else it
    failed and may run again. `row`: its django_q_task row, built by the worker (COPY text),
    or `task`: the whole task, for the dispatcher to save the way django-q2's monitor does
    (chains, hooks, cached results, signals, another broker)."""

    job_id: int | str
    success: bool
    ack: bool
    row: bytes | None
    task: dict[str, Any] | None
    error: str


class BadPackage(NamedTuple):
    job_id: int | str
    error: str


class NoSlotForKey(NamedTuple):
    """The worker could not open the session holding its cluster's key: PostgreSQL had no
    connection slot. The job did not start."""

    job_id: int | str
    error: str


class KeyLost(NamedTuple):
    """The worker no longer holds its cluster's key: it exits without starting the job."""

    job_id: int | str


class Started(NamedTuple):
    """The worker runs these jobs (the first ones in its pipe) together, in one call: all of
    them are running. `size`: the most the function takes at once."""

    job_ids: tuple[int | str, ...]
    size: int


WorkerMessage = Done | BadPackage | NoSlotForKey | KeyLost | Started
# Several jobs for one worker travel as a list of RunJob; several results as a list of Done.
