"""The lab's smoke run (`make test`): simulated hosts over real TCP (devtools/lab.py), one
partition of a worker host and one pause of a whole cluster. The long runs (60 s partitions,
120 s pauses, many hosts) are `make experiment preset=jepsen`'s.

Every job here writes start/end lines naming its host and holds a per-job file lock while it
runs (tests/pgbroker/tasks.py): a run of a job while another run of it lives, on any host, is
seen.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from devtools import lab
from devtools.processes import alive
from tests.helpers import wait_until

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                       reason="the lab needs root and iproute2 (network namespaces)"),
]
RUN = "tests.pgbroker.tasks.run"
REDELIVERY_BOUND = 10.0  # seconds: docs/guarantees.md
JOB_SECONDS = 3.0  # each job's length: a taken-back job waits for a worker of the other host
BACK_BOUND = 10.0  # a healed host serves again within this
# How long the faults last: short in `make test`; the long runs are
# LAB_PARTITION_SECONDS=60 LAB_PAUSE_SECONDS=120 pytest tests/lab (as root).
PARTITION_SECONDS = float(os.environ.get("LAB_PARTITION_SECONDS", "12"))
PAUSE_SECONDS = float(os.environ.get("LAB_PAUSE_SECONDS", "6"))


class History:
    """The lines the jobs wrote: (event, key, host, pid, time)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[tuple[str, str, str, int, float]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            event, key, host, pid, at = line.split()
            rows.append((event, key, host, int(pid), float(at)))
        return rows

    def runs(self, event: str, key: str | None = None) -> list[tuple[str, str, int, float]]:
        return [(k, h, p, t) for e, k, h, p, t in self.read()
                if e == event and (key is None or k == key)]

    def running_on(self, host: str) -> set[str]:
        """Jobs whose run on `host` started, has not ended, and whose process lives (a
        killed run writes no end)."""
        started = {(k, p) for k, h, p, _ in self.runs("start") if h == host}
        ended = {(k, p) for k, h, p, _ in self.runs("end") if h == host}
        return {k for k, p in started - ended if alive(p)}

    def overlaps(self) -> list[str]:
        return [k for k, *_ in self.runs("overlap")]


def sql(query: str) -> list[list[str]]:
    out = lab.psql(query, database=lab.DB_NAME)
    return [line.split("|") for line in out.strip().splitlines()]


def owner_of(host: str) -> int:
    ((owner,),) = wait_until(lambda: sql(f"SELECT owner FROM pgbroker_cluster "
                                         f"WHERE host = '{host}'"),
                             timeout=30, message=f"{host}'s PostgreSQL cluster")
    return int(owner)


def enqueue(history: History, keys: list[str], seconds: float) -> None:
    code = ("from django.db import transaction\nfrom django_q.tasks import async_task\n"
            "with transaction.atomic():\n"
            f"    for key in {keys!r}:\n"
            f"        async_task({RUN!r}, {str(history.path)!r}, key, {seconds!r})\n")
    r = lab.manage("shell", "-c", code, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.fixture(scope="module")
def the_lab():
    lab.up(workers=2)
    yield lab.load()
    lab.down(quiet=True)
    assert lab.namespaces() == [], "the lab left a namespace behind"


@pytest.fixture
def history(tmp_path) -> History:
    path = tmp_path / "history"
    path.touch(mode=0o666)
    return History(path)


def busy_host(history: History) -> str:
    """A worker host running a job (whichever claimed first)."""
    host = wait_until(lambda: next((h for h in ("w1", "w2") if history.running_on(h)), None),
                      timeout=30, message="a host to run a job")
    assert host is not None
    return host


def log(host: str) -> str:
    return (lab.host(host).var / "log" / "qcluster.log").read_text()


def log_tail(host: str) -> str:
    return log(host)[-3000:]


def test_a_worker_host_cut_off_from_postgresql_has_its_jobs_run_elsewhere_never_twice_at_once(
    the_lab, history
):
    keys = [f"j{i}" for i in range(12)]
    enqueue(history, keys, seconds=JOB_SECONDS)
    victim = busy_host(history)
    owner = owner_of(victim)
    running = history.running_on(victim)
    assert sql(f"SELECT id FROM pgbroker_job WHERE owner = {owner}"), f"{victim} holds jobs"
    lab.partition(victim, peer="db", way="both")
    cut = time.time()
    try:
        taken = wait_until(
            lambda: not sql(f"SELECT 1 FROM pgbroker_job WHERE owner = {owner}") and time.time(),
            timeout=30, interval=0.05, message=f"{victim}'s jobs to be taken back")
        assert taken - cut <= REDELIVERY_BOUND, f"taken back {taken - cut:.1f} s after the cut"
        # the victim's own fence stopped its workers before that: nothing of it still runs
        assert history.running_on(victim) == set(), log_tail(victim)
        # what it was running starts on the other host
        elsewhere = wait_until(
            lambda: all(any(h != victim and t > cut for _, h, _, t in history.runs("start", k))
                        for k in running) and time.time(),
            timeout=30, interval=0.05, message="the victim's jobs to run elsewhere")
        # taken back within the bound; then it starts when a worker of the other host is
        # done with the job it was running (the victim's keep their place in the queue)
        assert elsewhere - cut <= REDELIVERY_BOUND + JOB_SECONDS, \
            f"ran elsewhere {elsewhere - cut:.1f} s after the cut"
        assert history.overlaps() == []
        time.sleep(max(0.0, cut + PARTITION_SECONDS - time.time()))
    finally:
        lab.heal(victim)
    healed = time.time()
    back = wait_until(
        lambda: bool(sql(f"SELECT 1 FROM pgbroker_cluster WHERE host = '{victim}' "
                         f"AND seen_at > to_timestamp({healed})")) and time.time(),
        timeout=30, interval=0.1, message=lambda: f"{victim} to serve again:\n"
                                                  + log_tail(victim))
    assert back - healed <= BACK_BOUND, f"{victim} back {back - healed:.1f} s after the heal"
    print(f"cut {PARTITION_SECONDS:g} s: taken back after {taken - cut:.1f} s, running elsewhere "
          f"after {elsewhere - cut:.1f} s, serving again {back - healed:.1f} s after the heal")
    wait_until(lambda: all(history.runs("end", k) for k in keys), timeout=60,
               message=lambda: f"every job to finish: {history.read()}")
    assert history.overlaps() == []
    assert "before another cluster may take it over" in log(victim)


def test_a_whole_cluster_paused_runs_nothing_twice_at_once_and_then_finishes(
    the_lab, history
):
    keys = [f"p{i}" for i in range(8)]
    enqueue(history, keys, seconds=1.0)
    victim = busy_host(history)
    group = lab.programs(victim)["qcluster"]["pid"]
    os.killpg(group, signal.SIGSTOP)
    try:
        time.sleep(PAUSE_SECONDS)
        assert history.overlaps() == []
    finally:
        os.killpg(group, signal.SIGCONT)
    wait_until(lambda: all(history.runs("end", k) for k in keys), timeout=60,
               message=lambda: f"every job to finish: {history.read()}")
    assert history.overlaps() == []


def test_a_short_cut_heals_while_the_server_still_holds_the_old_session(the_lab):
    """Cut for 4 s: the dispatcher's calls fail after its tcp_user_timeout (2 s) and it
    reconnects as soon as the link is back, while the server still keeps its old session (it
    ends it after 5-7 s). Were the key held exclusively, the new session would be refused
    ("key taken") until the server let go of the old one; shared, it is back at once, and
    nobody took its jobs."""
    owner = owner_of("w1")
    lines = {h: len(log(h).splitlines()) for h in ("w1", "w2")}
    lab.partition("w1", peer="db", way="both")
    time.sleep(4)
    lab.heal("w1")
    healed = time.time()
    back = wait_until(
        lambda: bool(sql(f"SELECT 1 FROM pgbroker_cluster WHERE owner = {owner} "
                         f"AND seen_at > to_timestamp({healed})")) and time.time(),
        timeout=30, interval=0.1, message=lambda: "w1 to serve again:\n" + log_tail("w1"))
    since = {h: "\n".join(log(h).splitlines()[n:]) for h, n in lines.items()}
    assert "database back after" in since["w1"], since["w1"]
    assert back - healed <= 3.0, f"w1 back {back - healed:.1f} s after the heal:\n{since['w1']}"
    assert "took back" not in since["w2"]
