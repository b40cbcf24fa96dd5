"""What survived: the whole history of a run, checked against the invariants."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from django.db.models import Count

from experiments.plan import MODES, Plan
from experiments.styles import by_style

MESSAGE_ID = re.compile(rb"^Message-ID: <welcome-(\d+)@", re.MULTILINE | re.IGNORECASE)


def mails_per_user(mail_dir: Path) -> Counter:
    """How many welcome emails were handed to the mail server, per user id (the file backend
    writes one file per connection; a message is counted by its Message-ID)."""
    sent: Counter = Counter()
    for path in mail_dir.glob("*.log"):
        for match in MESSAGE_ID.finditer(path.read_bytes()):
            sent[int(match.group(1))] += 1
    return sent


def longest_stall(samples: list[dict]) -> float:
    """The longest time work was pending and nothing moved (users, emails, finished sagas)."""
    longest, since, last, prev_t = 0.0, None, None, None
    for s in samples:
        progress = (s["users"], s["emails"], s["sagas_done"])
        if s["pending"] and progress == last:
            since = since if since is not None else prev_t
            longest = max(longest, s["t"] - since)
        else:
            since = None
        last, prev_t = progress, s["t"]
    return round(longest, 1)


def job_history(history_dir: Path | None, timeline: list[dict], t0: float) -> dict:
    """What the attempts' history says (experiments.history): jobs that ran twice at once,
    how fast a cut-off host's jobs ran elsewhere, the longest wait."""
    from experiments import history
    from pgbroker.history import read

    if history_dir is None or not Path(history_dir).exists():
        return history.summary([], [], [])
    kills = [(t0 + e["t"], e["pid"]) for e in timeline if e["kind"] == "kill" and e["pid"]]
    cuts = [(t0 + e["t"], e["target"]) for e in timeline
            if e["kind"] == "partition" and not e["note"].startswith("skipped")]
    paused = []  # (stopped, resumed, process group): the run's whole-cluster pauses
    for i, e in enumerate(timeline):
        if e["kind"] == "group_pause" and e["pid"]:
            resumed = next((r["t"] for r in timeline[i:]
                            if r["kind"] == "resume" and r["pid"] == e["pid"]), math.inf)
            paused.append((t0 + e["t"], t0 + resumed, e["pid"]))
    events = read(history_dir)
    return history.summary(history.attempts(events, kills), cuts, events, paused, kills)


def check_history(*, plan: Plan, mail_dir: Path, samples: list[dict], timeline: list[dict],
                  faults: Counter, restarts: dict[str, int], quiesced_after: float,
                  stall_limit: float, history_dir: Path | None = None,
                  t0: float = 0.0) -> dict:
    from jobs.models import JobRun
    from outbox.models import OutboxMessage
    from sagas.models import Saga, State
    from sagas.selectors import Verdict, judge_now
    from users.models import EmailSend, User

    mails = mails_per_user(mail_dir)
    ledger = Counter(EmailSend.objects.values_list("user_id", flat=True))
    planned = {s.name: s for s in plan.signups}
    modes = {}
    for mode in MODES:
        users = list(User.objects.filter(signup_mode=mode).values_list("pk", "username"))
        lost = [name for pk, name in users if not ledger[pk]]
        part2 = [n for n in lost if planned.get(n) and "part2" in (planned[n].fail,
                                                                      planned[n].crash)]
        modes[mode] = {
            "signups": sum(1 for s in plan.signups if s.mode == mode),
            "users": len(users),
            "emails": sum(1 for pk, _ in users if ledger[pk]),
            "lost": len(lost),
            # more than one email recorded as sent (the ledger): a broken promise
            "duplicated": sum(1 for pk, _ in users if ledger[pk] > 1),
            # the same email handed to the mail server twice: the process died after the
            # hand-off and before its commit; the receiver drops the copy by Message-ID
            "resent": sum(1 for pk, _ in users if mails[pk] > 1),
            "lost_names": lost[:20],
            "lost_explained": {"part 2 fault": len(part2),
                               "killed, crashed or Redis down after the commit":
                                   len(lost) - len(part2)} if mode == "dual-write" else {},
        }
    verdicts = judge_now(Saga.objects.all())  # every saga of the scratch database
    still_booked = [i for i, v in verdicts.items() if v == Verdict.COMPENSATED_BUT_BOOKED]
    incomplete = [i for i, v in verdicts.items() if v == Verdict.COMPLETED_NOT_BOOKED]
    states = dict(Saga.objects.values_list("state").annotate(n=Count("id")))
    half_done = (still_booked + incomplete
                 + list(Saga.objects.active().values_list("pk", flat=True)))
    styles = by_style(plan.params.styles, verdicts)
    sagas = {
        "started": sum(states.values()),
        "completed": states.get(State.COMPLETED, 0),
        "compensated": states.get(State.COMPENSATED, 0),
        "stuck": states.get(State.STUCK, 0),
        "half_done": len(half_done),
        "flights_booked_twice": sum(v == Verdict.FLIGHT_BOOKED_TWICE for v in verdicts.values()),
    }
    kinds = Counter(e["kind"] for e in timeline)
    stall = longest_stall(samples)
    result: dict[str, Any] = {
        "modes": modes,
        "sagas": sagas,
        "sagas_by_style": styles,
        "faults": {
            "kills": kinds["kill"], "pg_restarts": kinds["pg_restart"],
            "terminations": kinds["terminate"], "pauses": kinds["pause"],
            "partitions": sum(1 for e in timeline if e["kind"] == "partition"
                              and not e["note"].startswith("skipped")),
            "group_pauses": sum(1 for e in timeline if e["kind"] == "group_pause"
                                and e["pid"]),
            "clock_skew_s": plan.params.clock_skew_s, "skewed_host": plan.skewed_host,
            "redis_restarts": kinds["redis_restart"],
            "kills_by_target": dict(Counter(e["target"] for e in timeline
                                            if e["kind"] == "kill")),
            "signup_faults": sum(1 for s in plan.signups if s.fail or s.crash),
            # sagas, not trips: with both styles, each trip's faults are in two sagas
            "saga_faults": sum(1 for t in plan.trips if t.faults) * len(styles),
            "saga_faults_by_point": dict(Counter(
                point.split(".", 1)[1].rsplit(".", 1)[0] if point.startswith("saga.after")
                else point.rsplit(".", 1)[1] + " " + action
                for t in plan.trips for point, action in t.faults for _ in styles)),
            "restarts": {k: v for k, v in restarts.items() if v},
            "reconciled": kinds["reconcile"],
        },
        "outbox_dead": OutboxMessage.objects.dead().count(),
        "jobs_parked": JobRun.objects.parked().count(),
        "quiesced_after_s": None if math.isinf(quiesced_after) else quiesced_after,
        "longest_stall_s": stall,
        "history": job_history(history_dir, timeline, t0),
    }
    reasons = []
    for mode in ("outbox", "que"):
        if modes[mode]["lost"] or modes[mode]["duplicated"]:
            reasons.append(f"{mode}: {modes[mode]['lost']} lost, "
                           f"{modes[mode]['duplicated']} duplicated")
        if modes[mode]["users"] != modes[mode]["signups"]:
            reasons.append(f"{mode}: {modes[mode]['users']} of {modes[mode]['signups']} "
                           "signups committed")
    if result["history"]["ran_concurrently"]:
        reasons.append(f"{result['history']['ran_concurrently']} job(s) ran in two places at "
                       "once")
    for style, s in styles.items():  # each style on its own: both must hold
        if s["half_done"]:
            reasons.append(f"{style}: {s['half_done']} saga(s) half done")
        if s["flights_booked_twice"]:
            reasons.append(f"{style}: {s['flights_booked_twice']} flight(s) booked twice")
    if result["quiesced_after_s"] is None:
        reasons.append("the system never quiesced")
    if stall > stall_limit:
        reasons.append(f"a stall of {stall:g} s (limit {stall_limit:g} s)")
    result["passed"] = not reasons
    result["why_not"] = reasons
    return result
