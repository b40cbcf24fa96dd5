"""Tasks for the liveness tests. Each run of a job appends "start"/"end" lines to a file, with
its host (HOST_NAME: the lab's hosts share this machine's filesystem) and pid, and holds an
exclusive lock on a per-job file while it runs: a second run of the same job starting while
the first is still alive, on any host, finds the lock taken and says so (the lock dies with its
process, like a worker's SIGKILL)."""

import fcntl
import os
import time

from pgbroker.batching import batched


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def run(path: str, key: str, seconds: float = 0.0) -> str:
    me = f"{os.environ.get('HOST_NAME') or '-'} {os.getpid()}"
    lock = open(f"{path}.{key}.lock", "a")  # noqa: SIM115 (held for the whole run)
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        _append(path, f"overlap {key} {me} {time.time()}")
        raise RuntimeError(f"job {key} is already running elsewhere") from None
    _append(path, f"start {key} {me} {time.time()}")
    time.sleep(seconds)
    _append(path, f"end {key} {me} {time.time()}")
    lock.close()
    return key


def crash() -> None:
    """A poison job: kills its worker every time (an OOM or a segfault would do the same)."""
    os._exit(70)


def big(path: str, key: str, seconds: float, blob: str, result_bytes: int) -> str:
    """A job with a large argument and a large result (to fill the pipes)."""
    run(path, key, seconds)
    return "x" * result_bytes


def noop(n: int = 0) -> int:
    return n


def ticking(path: str, key: str, seconds: float) -> str:
    """A job that shows when it executes: a "tick" line every 5 ms (no lock: two runs of it
    may tick at once, and the lines say when)."""
    me = f"{os.environ.get('HOST_NAME') or '-'} {os.getpid()}"
    _append(path, f"start {key} {me} {time.time()}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _append(path, f"tick {key} {me} {time.time()}")
        time.sleep(0.005)
    _append(path, f"end {key} {me} {time.time()}")
    return key


def started(path: str, key: str) -> str:
    """A job that only writes down that it started (a "start" line, as run() writes it): the
    lines' order is the order the jobs started in."""
    _append(path, f"start {key} {os.environ.get('HOST_NAME') or '-'} {os.getpid()} "
                  f"{time.time()}")
    return key


def _batch_line(path: str, size: int, key: str) -> None:
    _append(path, f"batch {size} {key} {os.getpid()} {time.time()}")


def run_batch(calls: list[dict]) -> list[object]:
    """The batch form of batch_job: one line per job with the batch's size; "bad..." fails
    its own job, "die" kills the worker with the whole batch in hand."""
    for call in calls:
        _batch_line(call["path"], len(calls), call["key"])
    if any(call["key"] == "die" for call in calls):
        os._exit(70)
    return [ValueError(f"{call['key']} refused") if call["key"].startswith("bad")
            else call["key"] for call in calls]


@batched(run_batch, size=10)
def batch_job(*, path: str, key: str) -> str:
    return run_batch([{"path": path, "key": key}])[0]  # type: ignore[return-value]
