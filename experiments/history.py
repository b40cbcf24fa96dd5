"""Reading the job history a run leaves (pgbroker/history.py): every attempt of every job and
saga step, on every host, as intervals; which of them ran at once; how fast a cut-off host's
jobs ran again elsewhere. Pure functions of the events and the fault timeline."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

EPSILON = 0.001  # seconds: an end and a start this close are one after the other
KILL_CASCADE = 1.0  # seconds: a process dies this soon after its parent's or group's SIGKILL
# A worker that finds its key gone on resuming exits before one more instruction of its job:
# its SIGCONT handler runs first, or waits while the key's watcher thread decides (pgbroker).
STOPPED_THEN_EXITED = ("lost while it was stopped", "the key could not be held again")


@dataclass
class Attempt:
    job: str
    host: str
    pid: int
    start: float  # monotonic seconds (the machine's clock, shared by the lab's hosts)
    end: float | None = None  # None: never seen to end (its process vanished unseen)
    how: str = "open"  # ended, failed, died (its dispatcher saw it), killed (the run killed it)
    ppid: int = 0
    pgid: int = 0
    attempt: int = 0
    waited: float | None = None


Event = dict[str, Any]  # one line of pgbroker.history


def attempts(events: Sequence[Event], kills: Sequence[tuple[float, int]] = ()) -> list[Attempt]:
    """Intervals from the events (in time order). An attempt without its own end is closed by
    the dispatcher's `died` line for its worker, or by a kill of its process, its dispatcher
    or its process group (`kills`: (monotonic time, pid) from the run's timeline)."""
    found: list[Attempt] = []
    # pid: its open attempts (a saga step runs inside the job that coordinates it: nested)
    running: dict[int, list[Attempt]] = defaultdict(list)
    for e in events:
        kind, pid = e["e"], e["pid"]
        if kind == "start":
            a = Attempt(job=e["job"], host=e["host"], pid=pid, start=e["t"],
                        ppid=e.get("ppid", 0), pgid=e.get("pgid", 0),
                        attempt=e.get("attempt") or 0, waited=e.get("waited"))
            found.append(a)
            running[pid].append(a)
        elif kind == "end":
            match = next((a for a in reversed(running[pid]) if a.job == e["job"]), None)
            if match is not None:
                running[pid].remove(match)
                match.end, match.how = e["t"], "ended" if e.get("ok") else "failed"
        elif kind == "died" and e.get("worker") is not None and running.get(e["worker"]):
            for a in running.pop(e["worker"]):
                a.end, a.how = e["t"], f"died ({e.get('how', '')})"
        elif kind == "died" and e.get("children_of"):  # a dispatcher killed with its workers
            for pid_ in [p for p, runs in running.items()
                         if runs and runs[0].ppid == e["children_of"]]:
                for a in running.pop(pid_):
                    a.end, a.how = e["t"], f"died ({e.get('how', '')})"
    for a in (a for open_ones in running.values() for a in open_ones):
        for at, pid in sorted(kills):
            # A worker may start its next job in the moment between its dispatcher's SIGKILL
            # and its own death (PR_SET_PDEATHSIG follows the parent's exit, a few ms later).
            if at >= a.start - KILL_CASCADE and pid in (a.pid, a.ppid, a.pgid):
                a.end, a.how = max(at, a.start), "killed"
                break
    return found


def executing(a: Attempt,
              paused: Sequence[tuple[float, float, int]] = ()) -> list[tuple[float, float]]:
    """When the attempt could execute: from its start to its end, less the times its whole
    process group was stopped (`paused`: start, end, process group), when it ran nothing."""
    pieces = [(a.start, math.inf if a.end is None else a.end)]
    for start, end, group in paused:
        if group != a.pgid:
            continue
        pieces = [part for s, e in pieces
                  for part in ((s, min(e, start)), (max(s, end), e)) if part[1] > part[0]]
        if any(m in a.how for m in STOPPED_THEN_EXITED) and start < (a.end or 0) <= end + 1.0:
            # it exited on resuming, before one more instruction of its job (its SIGCONT
            # handler runs first): nothing after this pause
            pieces = [(s, e) for s, e in pieces if e <= start]
    return pieces


def concurrent(found: list[Attempt],
               paused: Sequence[tuple[float, float, int]] = ()) -> list[tuple[Attempt, Attempt]]:
    """Pairs of attempts of one job that executed at the same time (an attempt never seen to
    end overlaps everything after it; a stopped process executes nothing)."""
    by_job: dict[str, list[Attempt]] = defaultdict(list)
    for a in found:
        by_job[a.job].append(a)
    pairs = []
    for runs in by_job.values():
        if len(runs) < 2:
            continue
        runs.sort(key=lambda a: a.start)
        spans = {id(a): executing(a, paused) for a in runs}
        for i, a in enumerate(runs):
            for b in runs[i + 1:]:
                if any(min(e1, e2) - max(s1, s2) > EPSILON
                       for s1, e1 in spans[id(a)] for s2, e2 in spans[id(b)]):
                    pairs.append((a, b))
    return pairs


def redelivery(found: list[Attempt], cuts: Sequence[tuple[float, str]]) -> list[float]:
    """For each partition (monotonic time, host): for each job the host was running when it
    was cut off and that did not end there (its worker was stopped, or never seen again),
    the seconds until it started on another host. (A job that failed there is retried by its
    backoff, not redelivered; one that ended there needs nothing.)"""
    delays = []
    for at, host in cuts:
        for a in found:
            if a.host != host or a.start > at or (a.end is not None and a.end <= at):
                continue
            if a.how in ("ended", "failed"):
                continue
            later = [b.start for b in found if b.job == a.job and b.host != host
                     and b.start > at]
            if later:
                delays.append(min(later) - at)
    return delays


@dataclass
class Owner:
    """A cluster's owner key as the history shows it: the attempts its workers started."""

    host: str
    first: float  # its first attempt's start
    dispatchers: set[int] = field(default_factory=set)  # its workers' parent
    groups: set[int] = field(default_factory=set)  # its workers' process group
    gone: float = math.inf  # when its dispatcher was seen dead, or its key taken back


def owners(events: Sequence[Event], kills: Sequence[tuple[float, int]] = ()) -> dict[str, Owner]:
    """Every owner key that started an attempt, with when it was gone: its dispatcher killed
    for hanging (a `died` event for the dispatcher's children), its dispatcher or its whole
    process group killed by the run (`kills`: a SIGKILL of a whole cluster leaves no line in
    the history), or its jobs taken back (`took_back`)."""
    found: dict[str, Owner] = {}
    for e in events:
        if e["e"] == "start" and e.get("owner"):
            o = found.setdefault(e["owner"], Owner(host=e["host"], first=e["t"]))
            o.dispatchers.add(e.get("ppid") or 0)
            o.groups.add(e.get("pgid") or 0)
    for o in found.values():
        o.dispatchers.discard(0)
        o.groups.discard(0)
    ends = [(at, {pid}, {pid}) for at, pid in kills]
    ends += [(e["t"], {e["children_of"]}, set()) for e in events
             if e["e"] == "died" and e.get("children_of")]
    for o in found.values():
        for at, dispatchers, groups in ends:
            if o.dispatchers & dispatchers or o.groups & groups:
                o.gone = min(o.gone, at)
    for e in events:
        if e["e"] == "took_back" and e.get("owner") in found:
            o = found[e["owner"]]
            o.gone = min(o.gone, e["t"])
    return found


def taken_back(events: Sequence[Event], cuts: Sequence[tuple[float, str]],
               kills: Sequence[tuple[float, int]] = ()) -> list[float]:
    """For each partition: the seconds until another cluster took back the jobs of a cluster
    of the cut-off host. Only the owner keys alive on that host at the cut count: one whose
    dispatcher was dead already (killed shortly before the cut: its key freed by the kill,
    not by the cut) is taken back on the kill's clock, which says nothing about the cut."""
    known = owners(events, kills)
    delays = []
    for at, host in cuts:
        alive = {key for key, o in known.items() if o.host == host and o.first <= at < o.gone}
        taken = [e["t"] for e in events if e["e"] == "took_back" and e["t"] > at
                 and e.get("owner") in alive]
        if taken:
            delays.append(min(taken) - at)
    return delays


def summary(found: list[Attempt], cuts: Sequence[tuple[float, str]],
            events: Sequence[Event] = (), paused: Sequence[tuple[float, float, int]] = (),
            kills: Sequence[tuple[float, int]] = ()) -> dict[str, Any]:
    pairs = concurrent(found, paused)
    delays = redelivery(found, cuts)
    taken = taken_back(events, cuts, kills)
    first: dict[str, Attempt] = {}
    for a in found:  # a job's wait: until its first attempt (a rerun's counts its first run)
        if a.job not in first or a.start < first[a.job].start:
            first[a.job] = a
    waits = [a.waited for a in first.values() if a.waited is not None]
    return {
        "attempts": len(found),
        "jobs": len({a.job for a in found}),
        "hosts": sorted({a.host for a in found}),
        "ran_concurrently": len({a.job for a, _ in pairs}),
        "concurrent_examples": [
            f"{a.job}: {a.host} pid {a.pid} ({a.how}) and {b.host} pid {b.pid}, "
            f"{(a.end - b.start) if a.end is not None else float('inf'):.2f} s together"
            for a, b in pairs[:5]],
        "never_ended": sum(1 for a in found if a.end is None),
        "taken_back_after_partition": len(taken),
        "taken_back_p50_s": round(statistics.median(taken), 2) if taken else None,
        "taken_back_max_s": round(max(taken), 2) if taken else None,
        "redelivered_after_partition": len(delays),
        "redelivery_p50_s": round(statistics.median(delays), 2) if delays else None,
        "redelivery_max_s": round(max(delays), 2) if delays else None,
        "longest_wait_s": round(max(waits), 2) if waits else None,
    }
