"""CPU per trivial job of one pgbroker worker process, fed through its pipe, no database:

    python -m bench.worker_cpu                 this project's worker (cluster/runner.py)
    WORKER_LOOP=django-q2 python -m bench.worker_cpu    django-q2's worker() and SignedPackage

WORKER_N jobs (20,000), up to 8 in the pipe at once. The figures of docs/benchmarks.md,
"Where the time goes".
"""

from __future__ import annotations

import os
import resource
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("Q_RECYCLE", "10000000")

import django  # noqa: E402

django.setup()

from multiprocessing import get_context  # noqa: E402

from django_q.brokers import Broker  # noqa: E402
from django_q.signing import SignedPackage  # noqa: E402
from django_q.tasks import async_task  # noqa: E402
from django_q.worker import worker as django_q_worker  # noqa: E402

from pgbroker.cluster import runner, worker  # noqa: E402
from pgbroker.cluster.messages import STOP, RunJob  # noqa: E402

N = int(os.environ.get("WORKER_N", "20000"))


class Capture(Broker):
    """A broker that keeps the packages async_task() signs."""

    def __init__(self) -> None:
        super().__init__(list_key="bench")
        self.packages: list[str] = []

    def enqueue(self, task: str) -> None:
        self.packages.append(task)


def main() -> None:
    if os.environ.get("WORKER_LOOP") == "django-q2":
        runner.run = django_q_worker
        worker.PackageReader.loads = lambda self, p: SignedPackage.loads(p)  # type: ignore
    capture = Capture()
    for i in range(50):
        async_task("math.floor", i, broker=capture)
    ctx = get_context("fork")
    ours, theirs = ctx.Pipe(duplex=True)
    process = ctx.Process(target=worker.worker_main, args=(
        theirs, ctx.Value("f", -1), 30, os.getpid(), [], worker.WorkerSetup(rows=True)))
    process.start()
    theirs.close()
    started = time.perf_counter()
    sent = done = 0
    while done < N:
        while sent < N and sent - done < 8:
            ours.send(RunJob(sent, capture.packages[sent % 50], 1, 0.0, 0.0))
            sent += 1
        ours.recv()
        done += 1
    seconds = time.perf_counter() - started
    ours.send(STOP)
    process.join()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{os.environ.get('WORKER_LOOP', 'pgbroker')}: {N / seconds:,.0f} jobs/s through one "
          f"worker; its CPU {(used.ru_utime + used.ru_stime) / N * 1e6:.1f} us per job")


if __name__ == "__main__":
    main()
