"""Incremental audits: an invariant checked over what is recent, plus a watermark.

Checking every user at every refresh costs what the history costs. An audit instead splits
the rows (ids only grow) in three:

- behind the watermark: checked once, settled; those that were not ok are Findings;
- the findings: checked again at every look, until they are ok, then forgotten;
- ahead of the watermark: recent, checked at every look.

`advance()` (the "audit" schedule, every minute) moves the watermark over the rows that
settled. `check_consistency --full` checks everything, ignoring the watermark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from dashboard.models import Finding, Watermark

# judge(ids after, up to) -> ({id: verdict} of the rows not ok, the last settled id)
Judge = Callable[[int, int], tuple[dict[int, str], int]]


_everything: ContextVar[bool] = ContextVar("audit_everything", default=False)


@contextmanager
def everything() -> Iterator[None]:
    """Inside, every audit is at its start: the checks judge every row (`check_consistency
    --full`), at what the history costs."""
    token = _everything.set(True)
    try:
        yield
    finally:
        _everything.reset(token)


def position(name: str) -> int:
    if _everything.get():
        return 0
    mark = Watermark.objects.filter(name=name).only("position").first()
    return mark.position if mark else 0


def findings(name: str, *, final: Iterable[str] = ()) -> list[int]:
    """The ids found not ok behind the watermark, to check again: not those whose verdict is
    among `final` (they cannot change: counted, not judged again)."""
    if _everything.get():
        return []
    return list(Finding.objects.filter(audit=name).exclude(verdict__in=list(final))
                .order_by("subject").values_list("subject", flat=True))


def found(name: str, verdicts: Iterable[str]):
    """The findings of `name` with one of `verdicts` (a queryset)."""
    return Finding.objects.filter(audit=name, verdict__in=list(verdicts))


def passed(name: str, ids: Iterable[int]) -> set[int]:
    """Those of `ids` the audit passed as ok (behind its watermark, not findings), also inside
    `everything()`: for rules that rely on it (a ledger row pruned after the audit saw it)."""
    mark = Watermark.objects.filter(name=name).only("position").first()
    behind = {i for i in ids if mark and i <= mark.position}
    if not behind:
        return set()
    return behind - set(Finding.objects.filter(audit=name, subject__in=behind)
                        .values_list("subject", flat=True))


def settled_before(settle_seconds: float):
    """The time before which rows have settled, by the database's clock: `settle_seconds` ago,
    or earlier while a transaction that has written something and began before that is still
    open (it may yet commit a row with a lower id than rows already visible)."""
    with connection.cursor() as cur:
        cur.execute("""
            SELECT least(now() - make_interval(secs => %s),
                         coalesce(min(xact_start), 'infinity'::timestamptz))
              FROM pg_stat_activity
             WHERE datname = current_database() AND backend_xid IS NOT NULL
               AND pid <> pg_backend_pid()""", [settle_seconds])
        return cur.fetchone()[0]


def last_settled(rows, *, after: int, limit: int, born: str) -> int:
    """The last id of `rows` (a queryset) after `after`, at most `limit` of them, whose `born`
    time (when the row was written) is before `settled_before()`; stops at the first one
    that is not (the ids after it are not settled either). `after` when none is."""
    cutoff = settled_before(settings.AUDIT_SETTLE_SECONDS)
    last = after
    for i, when in (rows.filter(pk__gt=after).order_by("pk")
                    .values_list("pk", born)[:limit]):
        if when >= cutoff:
            break
        last = i
    return last


def advance(name: str, *, settled: Judge, batch: int = 5000, most: int = 200_000) -> int:
    """Move `name`'s watermark over the rows that settled, `batch` at a time, at most `most`
    rows per call. `settled(after, limit)` judges the next rows (in a snapshot of its own) and
    says how far they are settled; the findings and the new position are then written in one
    short transaction, only if nobody moved the watermark meanwhile. Returns how far (in ids)
    it moved."""
    Watermark.objects.get_or_create(name=name)
    moved = 0
    while moved < most:
        start = position(name)
        bad, last = settled(start, batch)
        if last <= start:
            Watermark.objects.filter(name=name).update(swept_at=timezone.now())
            break
        with transaction.atomic():
            if not Watermark.objects.filter(name=name, position=start).update(
                    position=last, swept_at=timezone.now()):
                continue  # another pass moved it: judge from where it is now
            Finding.objects.bulk_create(
                [Finding(audit=name, subject=i, verdict=v) for i, v in bad.items()],
                ignore_conflicts=True)
        moved += last - start
    return moved


def forget(name: str, ok: Iterable[int]) -> int:
    """Findings that are ok now: deleted."""
    deleted, _ = Finding.objects.filter(audit=name, subject__in=list(ok)).delete()
    return deleted


def rewind(name: str) -> None:
    """Forget the watermark and findings (tests; a restored database)."""
    Watermark.objects.filter(name=name).delete()
    Finding.objects.filter(audit=name).delete()
