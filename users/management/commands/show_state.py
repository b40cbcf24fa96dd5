import json
import unicodedata

from django.core.management.base import BaseCommand, CommandParser

from common import validate
from common.inputs import OneLineErrors, arg
from users.selectors import Verdict, system_state

NAME_COLUMNS = 20
LIMIT = 50


def parse_limit(value: object) -> int:
    return validate.integer(value, what="the limit", low=0, high=100_000)


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
        parser.add_argument("--limit", type=arg(parse_limit), default=LIMIT, metavar="N",
                            help=f"list the last N users (default {LIMIT}); every user is "
                                 "counted in the per-mode summary whatever N")

    def handle(self, *args, as_json: bool = False, limit: int = LIMIT, **options) -> None:
        state = system_state(limit=limit)
        if as_json:
            self.stdout.write(json.dumps(state, indent=2))
            return
        self.stdout.write(f"{fit('user', NAME_COLUMNS)} {'mode':<11} emails")
        for u in state["users"]:
            line = f"{fit(u['name'], NAME_COLUMNS)} {u['mode']:<11} {u['emails']}"
            if u["emails"] == 0 and u.get("verdict") == Verdict.IN_FLIGHT:
                line += "   <- on its way" + (f": {u['where']}" if u.get("where") else "")
            elif u["emails"] == 0:
                line = self.style.ERROR(line + "   <- no welcome email")
            elif u["emails"] > 1:
                line = self.style.ERROR(line + "   <- duplicated")
            self.stdout.write(line)
        if not state["users"]:
            self.stdout.write("(no users yet: manage.py create_user NAME)")
        total = sum(m["users"] for m in state["modes"])
        if total > len(state["users"]):
            self.stdout.write(f"(the last {len(state['users'])} of {total} users: --limit N "
                              "shows more)")
        for m in state["modes"]:
            line = (f"{m['mode']:<11} {m['users']} users, {m['emails']} emails; "
                    f"{m['in_flight']} in flight, {m['lost']} lost, {m['duplicated']} duplicated")
            if m["lost_by_store"]:
                line += f", {m['lost_by_store']} lost by Redis"
            bad = m["duplicated"] or (m["lost"] and m["mode"] != "dual-write")
            self.stdout.write(self.style.ERROR(line) if bad else line)
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
