"""What the signups look like: per mode, who got their welcome email, who is still waiting,
who lost it. Read by the dashboard (users/dashboard.py), `check_consistency`, `show_state` and
`create_user --sync`.

A verdict is read in one snapshot (common.db.snapshot), so a user committed with its job or
message between two queries never looks lost; Redis is read before the snapshot, so a job
taken off Redis after it was read is seen by the snapshot as sent or in a worker's hands.
"Lost" is said only of what nothing will send: a job taken by a worker, a message just
published, a retry waiting for its turn, a dual-write user whose job is being pushed are on
their way.

Cost: the counts are tallies (dashboard.tallies, kept by triggers in the transactions that
write users and emails); the verdicts cover the users ahead of the audit's watermark plus its
findings (dashboard.audit), so a refresh costs what the last minutes cost, not the year.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

from common.db import db_now, snapshot
from dashboard import audit, tallies
from jobs.models import JobRun
from jobs.selectors import queue_counts, queued_tasks, redis_queued_tasks, redis_status
from outbox.models import PUBLISHED_TALLY, MessageState, OutboxMessage
from outbox.selectors import outbox_counts
from users.models import EmailSend, Mode, User
from users.welcome import EMAIL_STORE, SEND_EMAIL_TASK, WELCOME_TOPIC, email_job_key

# A published message's job normally runs within milliseconds; one still not done after this
# long was lost by its store (Redis), and reconciliation will publish it again. The same grace
# covers a dual-write user whose job is being pushed, and a job a worker has just taken.
PUBLISHED_GRACE_SECONDS = 5
AUDIT = "users.welcome_email"
NAMES_SHOWN = 20  # names listed per verdict and mode; the counts are whole


class Verdict:
    SENT = "sent"
    DUPLICATED = "duplicated"
    IN_FLIGHT = "in flight"
    LOST = "lost"                    # nothing will ever send it
    LOST_BY_STORE = "lost by store"  # outbox: published, then a store lost the job


# Findings that cannot change (reconciliation never touches dual-write; a duplicate stays one):
# kept as evidence and counted, not judged again at every look.
DUAL_WRITE_LOST = "lost (dual-write)"
FINAL = (DUAL_WRITE_LOST, Verdict.DUPLICATED)


@dataclass
class Judged:
    id: int
    name: str
    mode: str
    verdict: str
    where: str = ""  # in flight: where the email is now


@dataclass
class ModeStats:
    mode: str
    users: int = 0
    emails: int = 0
    lost: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    lost_by_store: list[str] = field(default_factory=list)  # published, then a store lost it
    counts: dict[str, int] = field(default_factory=dict)    # verdict -> how many (lists cut)

    @property
    def store(self) -> str:
        return email_store_name(self.mode)

    def count(self, verdict: str) -> int:
        return self.counts.get(verdict, 0)

    @property
    def lost_count(self) -> int:
        return self.count(Verdict.LOST)

    @property
    def in_flight_count(self) -> int:
        return self.count(Verdict.IN_FLIGHT)

    @property
    def duplicated_count(self) -> int:
        return self.count(Verdict.DUPLICATED)

    @property
    def lost_by_store_count(self) -> int:
        return self.count(Verdict.LOST_BY_STORE)


def email_store_name(mode: str) -> str:
    """Where this mode's email jobs go: "PostgreSQL" or "Redis"."""
    return EMAIL_STORE[Mode(mode)].label.split(" (")[0]


def _email_user_ids(tasks) -> set[int]:
    return {t.kwargs["user_id"] for t in tasks
            if t.func == SEND_EMAIL_TASK and t.kwargs.get("user_id") is not None}


def users_with_email_job(*, include_parked: bool = False) -> set[int]:
    """Users with a welcome email job waiting in either store."""
    return (_email_user_ids(queued_tasks(include_parked=include_parked))
            | _email_user_ids(redis_queued_tasks()))


def welcome_messages():
    return OutboxMessage.objects.filter(topic=WELCOME_TOPIC)


def judge(users, *, in_redis: set[int], unpushed: frozenset[int] = frozenset()) -> list[Judged]:
    """The verdict on each user of `users` (a queryset, read here), inside the caller's
    snapshot; `in_redis`: the users whose job Redis held when read, before the snapshot;
    `unpushed`: dual-write users whose job is known never to have reached Redis."""
    rows = list(users.exclude(signup_mode="").annotate(n=Count("email_sends"))
                .order_by("id").values_list("id", "username", "signup_mode", "date_joined", "n"))
    found = {i: Judged(i, name, mode, Verdict.SENT if n == 1 else Verdict.DUPLICATED)
             for i, name, mode, _, n in rows if n}
    waiting = [(i, name, mode, joined) for i, name, mode, joined, n in rows if not n]
    if not waiting:
        return [found[i] for i, *_ in rows]
    now = db_now()
    recent = now - timedelta(seconds=PUBLISHED_GRACE_SECONDS)
    # The audit saw these sent, then their ledger rows were pruned (prunable_sends)
    pruned_before = now - timedelta(days=settings.RETENTION_DAYS["email_ledger"])
    ok = audit.passed(AUDIT, [i for i, *_, joined in waiting if joined < pruned_before])
    for i, name, mode, joined in list(waiting):
        if i in ok:
            found[i] = Judged(i, name, mode, Verdict.SENT, "its ledger row was pruned")
            waiting.remove((i, name, mode, joined))
    ids = [i for i, *_ in waiting]
    in_pg = _email_user_ids(queued_tasks())
    in_hands = {int(k.split(":")[1]) for k in JobRun.objects.pending().filter(
        key__in=[email_job_key(i) for i in ids], last_started_at__gte=recent)
        .values_list("key", flat=True)}
    # The message is written with the user (or after it): read from the oldest such user on,
    # by the (topic, created_at) index. Users without an email are recent, or findings.
    messages: dict[int, OutboxMessage] = {}
    joined_at = [joined for *_, mode, joined in waiting if mode == Mode.OUTBOX]
    if joined_at:
        for m in welcome_messages().filter(created_at__gte=min(joined_at)).only(
                "payload", "published_at", "dead_at", "created_at"):
            if isinstance(m.payload, dict) and m.payload.get("user_id") is not None:
                messages[m.payload["user_id"]] = m
    kept = timedelta(days=settings.RETENTION_DAYS["outbox_published"])
    for i, name, mode, joined in waiting:
        message = messages.get(i)
        where = ("queued in PostgreSQL" if i in in_pg else "queued in Redis" if i in in_redis
                 else "in a worker's hands" if i in in_hands else "")
        if not where and message is not None and message.state == MessageState.PENDING:
            where = "waiting in the outbox"
        elif (not where and message is not None and message.published_at is not None
              and message.published_at >= recent):
            where = "just published"
        elif not where and mode == Mode.DUAL_WRITE and joined >= recent and i not in unpushed:
            where = "on its way to a Redis worker"  # being pushed, or prefetched by a worker
        if where:
            verdict = Verdict.IN_FLIGHT
        elif mode == Mode.OUTBOX and message is not None and message.state == MessageState.DEAD:
            verdict = Verdict.LOST  # the relay gave up on it: a person retries it
        elif mode == Mode.OUTBOX and (message is not None or joined < now - kept):
            # published long ago (a message older than its retention was pruned, published)
            verdict = Verdict.LOST_BY_STORE
        else:
            verdict = Verdict.LOST
        found[i] = Judged(i, name, mode, verdict, where)
    return [found[i] for i, *_ in rows]


def judge_now(users, *, unpushed: frozenset[int] = frozenset()) -> list[Judged]:
    """`judge`, with Redis read first and the rest in one snapshot."""
    in_redis = _email_user_ids(redis_queued_tasks())
    with snapshot():
        return judge(users, in_redis=in_redis, unpushed=unpushed)


def recheck_findings() -> list[int]:
    """The audit's findings that are ok now (sent after all)."""
    return [j.id for j in judge_now(User.objects.filter(
        pk__in=audit.findings(AUDIT, final=FINAL))) if j.verdict == Verdict.SENT]


def live_users():
    """The users a look judges: ahead of the audit's watermark, and its findings that can
    still change."""
    return User.objects.filter(Q(pk__gt=audit.position(AUDIT))
                               | Q(pk__in=audit.findings(AUDIT, final=FINAL)))


def final_findings() -> list[Judged]:
    """The findings that cannot change, as verdicts (counted from the audit's table)."""
    if audit.position(AUDIT) == 0:  # inside audit.everything(): every user is judged anyway
        return []
    verdicts = dict(audit.found(AUDIT, FINAL).values_list("subject", "verdict"))
    users = User.objects.filter(pk__in=audit.found(AUDIT, FINAL).values("subject"))
    return [Judged(i, name, mode, Verdict.LOST if verdicts[i] == DUAL_WRITE_LOST
                   else Verdict.DUPLICATED)
            for i, name, mode in users.order_by("pk").values_list("pk", "username",
                                                                  "signup_mode")]


def signup_stats() -> list[ModeStats]:
    """Per mode: users and emails (ever), and who is lost, in flight or duplicated."""
    in_redis = _email_user_ids(redis_queued_tasks())
    with snapshot():
        users = tallies.totals("signups.")
        emails = tallies.totals("welcome_emails.")
        judged = judge(live_users(), in_redis=in_redis) + final_findings()
    stats = {m: ModeStats(mode=m, users=users.get(f"signups.{m}", 0),
                          emails=emails.get(f"welcome_emails.{m}", 0)) for m in Mode.values}
    lists = {Verdict.LOST: "lost", Verdict.IN_FLIGHT: "in_flight",
             Verdict.DUPLICATED: "duplicated", Verdict.LOST_BY_STORE: "lost_by_store"}
    for j in judged:
        if j.verdict == Verdict.SENT:
            continue
        s = stats[j.mode]
        s.counts[j.verdict] = s.counts.get(j.verdict, 0) + 1
        shown = getattr(s, lists[j.verdict])
        if len(shown) < NAMES_SHOWN:
            shown.append(j.name)
    return list(stats.values())


def settled(after: int, limit: int) -> tuple[dict[int, str], int]:
    """The audit's step (dashboard.audit.advance): judge the next `limit` users after id
    `after` that joined long enough ago that no transaction still writing one with a lower id
    can be open; returns the ones not sent, and the last id judged."""
    last = audit.last_settled(User.objects.all(), after=after, limit=limit, born="date_joined")
    if last == after:
        return {}, after
    judged = judge_now(User.objects.filter(pk__gt=after, pk__lte=last))
    return {j.id: DUAL_WRITE_LOST if (j.verdict, j.mode) == (Verdict.LOST, Mode.DUAL_WRITE)
            else j.verdict for j in judged if j.verdict != Verdict.SENT}, last


def email_outcome(user: User, *, unpushed: bool = False) -> Judged:
    """One user's welcome email now: sent, in flight (and where), lost or duplicated.
    `unpushed`: the caller saw the signup end before its dual-write job reached Redis."""
    (judged,) = judge_now(User.objects.filter(pk=user.pk),
                          unpushed=frozenset([user.pk]) if unpushed else frozenset())
    return judged


def with_email_count(users, name: str):
    """`users` with each one's emails sent as `name`: a subquery per row, so a page of users
    (LIMIT) costs its rows, not a GROUP BY over every user."""
    sends = (EmailSend.objects.filter(user=OuterRef("pk")).order_by().values("user")
             .annotate(n=Count("pk")).values("n"))
    return users.annotate(**{name: Coalesce(Subquery(sends), 0)})


def system_state(*, limit: int = 50) -> dict:
    """The talk's `make db-show`: the last `limit` users and their emails, every user counted,
    the outbox, the queue."""
    stats = signup_stats()
    users = list(with_email_count(User.objects.exclude(signup_mode="").order_by("-id"),
                                  "emails")[:limit])
    users.reverse()
    # the users listed with no email: lost, or on its way (and where)?
    judged = {j.id: j for j in judge_now(User.objects.filter(
        pk__in=[u.pk for u in users if u.emails == 0]))} if any(u.emails == 0 for u in users) \
        else {}
    outbox = outbox_counts()
    published = tallies.totals(PUBLISHED_TALLY).get(PUBLISHED_TALLY, 0)
    queue = queue_counts()
    redis = redis_status()
    return {
        "users": [{"name": u.username, "mode": u.signup_mode, "emails": u.emails,
                   **({"verdict": judged[u.pk].verdict, "where": judged[u.pk].where}
                      if u.pk in judged else {})} for u in users],
        "modes": [{"mode": s.mode, "users": s.users, "emails": s.emails, "lost": s.lost_count,
                   "in_flight": s.in_flight_count, "duplicated": s.duplicated_count,
                   "lost_by_store": s.lost_by_store_count} for s in stats],
        "outbox": {"pending": outbox.pending, "published": published, "dead": outbox.dead},
        "queue": {"queued": queue.queued, "failed": queue.failed},
        "redis": {"up": redis.up, "queued": redis.depth, "workers": redis.workers},
    }



def prunable_sends(sends):
    """The ledger rows among `sends` that may go (retention): a key stays while a copy of its
    job is queued or its outbox message is pending (a duplicate can still arrive), while the
    audit has not judged its user, and while its user is a finding (the evidence)."""
    waiting = users_with_email_job(include_parked=True)
    for payload in OutboxMessage.objects.pending().filter(topic=WELCOME_TOPIC).values_list(
            "payload", flat=True):
        if isinstance(payload, dict) and payload.get("user_id") is not None:
            waiting.add(payload["user_id"])
    parked = [int(k.split(":")[1]) for k in JobRun.objects.parked().filter(
        key__startswith="email:").values_list("key", flat=True)]  # a person may retry it
    return (sends.filter(user_id__lte=audit.position(AUDIT))
            .exclude(user_id__in=[*waiting, *parked])
            .exclude(user_id__in=audit.found(AUDIT, [*FINAL, Verdict.LOST, Verdict.IN_FLIGHT,
                                                     Verdict.LOST_BY_STORE]).values("subject")))
