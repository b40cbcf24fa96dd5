"""django-q2 entry points."""

from dashboard import tallies


def fold_tallies() -> str:
    return f"folded {tallies.fold()} tally rows"
