"""Jobs of one function run together: a worker that holds several of a batched function's
jobs at once (they wait in its pipe) calls the function's batch form once, with every job's
keyword arguments, and takes one result per job (Oban Pro's chunk workers, graphile-worker's
batch jobs). Each job keeps its own result, attempts and retries; a batch whose worker dies
charges an attempt to every job in it.

    def send_one(*, user_id): ...
    def send_many(calls):  # [{"user_id": 1}, {"user_id": 2}, ...]
        return [... one result (or an exception instance: that job failed) per call ...]

    send_one = batched(send_many, size=50)(send_one)

The function alone is what runs when a job has no neighbours (or positional arguments), and
under any other broker.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

ATTRIBUTE = "pgbroker_batch"
SIZE_MAX = 1000
WRONG_COUNT = "the batch form of {func} returned {got} results for {asked} jobs"


@dataclass(frozen=True)
class Batch:
    many: Callable[[list[dict[str, Any]]], Sequence[object]]
    size: int


def batched(many: Callable[[list[dict[str, Any]]], Sequence[object]], *,
            size: int = 50) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a task function: up to `size` of its jobs run in one call of `many`."""
    if not isinstance(size, int) or not 2 <= size <= SIZE_MAX:
        raise ValueError(f"a batch size is a whole number from 2 to {SIZE_MAX}, not {size!r}")

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        setattr(func, ATTRIBUTE, Batch(many, size))
        return func
    return mark


def batch_of(func: object) -> Batch | None:
    return getattr(func, ATTRIBUTE, None)


def failure(error: BaseException) -> str:
    """A job's failure as django-q2 stores it: "<error> : <traceback>"."""
    return f"{error} : {''.join(traceback.format_exception(error))}"
