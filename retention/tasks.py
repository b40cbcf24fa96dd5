"""django-q2 entry points."""

from retention import services

PASS_BUDGET_SECONDS = 20  # well within the task timeout; the rest waits for the next pass


def prune() -> str:
    outcomes = services.prune(budget=PASS_BUDGET_SECONDS)
    deleted = sum(o.deleted for o in outcomes)
    left = [o.rule for o in outcomes if not o.complete]
    return f"pruned {deleted} rows" + (f"; more to do in {', '.join(left)}" if left else "")
