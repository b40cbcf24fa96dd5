import json
import unicodedata

from django.core.management.base import BaseCommand, CommandParser

from common.inputs import OneLineErrors
from users.selectors import system_state

NAME_COLUMNS = 20


def width(text: str) -> int:
    """Columns a terminal gives `text`: wide and fullwidth characters (CJK) take two,
    combining marks none."""
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def fit(text: str, columns: int) -> str:
    """`text` cut to `columns` (ending in an ellipsis when cut) and padded to exactly that
    many columns, so the columns after it line up."""
    if width(text) > columns:
        kept, used = [], 0
        for c in text:
            w = width(c)
            if used + w > columns - 1:
                break
            kept.append(c)
            used += w
        text = "".join(kept) + "…"
    return text + " " * (columns - width(text))


class Command(OneLineErrors, BaseCommand):
    help = ("Show users and their welcome emails, the outbox, the PostgreSQL queue and Redis "
            "(the talk's db-show).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="machine-readable output")

    def handle(self, *args, as_json: bool = False, **options) -> None:
        state = system_state()
        if as_json:
            self.stdout.write(json.dumps(state, indent=2))
            return
        self.stdout.write(f"{fit('user', NAME_COLUMNS)} {'mode':<11} emails")
        for u in state["users"]:
            line = f"{fit(u['name'], NAME_COLUMNS)} {u['mode']:<11} {u['emails']}"
            if u["emails"] == 0:
                line = self.style.ERROR(line + "   <- no welcome email")
            elif u["emails"] > 1:
                line = self.style.ERROR(line + "   <- duplicated")
            self.stdout.write(line)
        if not state["users"]:
            self.stdout.write("(no users yet: manage.py create_user NAME)")
        o, q = state["outbox"], state["queue"]
        self.stdout.write(f"outbox: {o['pending']} pending, {o['published']} published, "
                          f"{o['dead']} dead")
        self.stdout.write(f"queue:  {q['queued']} queued, {q['failed']} failed (PostgreSQL)")
        r = state["redis"]
        if r["up"]:
            self.stdout.write(f"redis:  {r['queued']} queued, {r['workers']} cluster worker(s)")
        else:
            self.stdout.write(self.style.ERROR("redis:  down (dual-write loses its emails, the "
                                               "outbox waits, que carries on)"))
