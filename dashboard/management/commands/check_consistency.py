import json

from django.core.management.base import BaseCommand, CommandParser

from common.inputs import OneLineErrors
from dashboard import audit
from dashboard.registry import Status, violations
from dashboard.selectors import consistency_checks


class Command(OneLineErrors, BaseCommand):
    help = ("Check the invariants of docs/design.md against the database: exit 0 when they hold, "
            "1 when any is broken (dual-write's lost emails are expected, not violations). "
            "Judges the recent rows and what the audit found behind its watermark; --full "
            "judges everything.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="each check with its status, count and offending ids")
        parser.add_argument("--full", action="store_true",
                            help="judge every row, not only the recent ones and what the "
                                 "audit found behind its watermark (costs what the history "
                                 "costs: minutes on millions of rows)")

    def handle(self, *args, as_json: bool, full: bool = False, **options) -> None:
        if full:
            with audit.everything():
                checks = consistency_checks()
        else:
            checks = consistency_checks()
        broken = violations(checks)
        if as_json:
            self.stdout.write(json.dumps({"ok": not broken,
                                          "checks": [c.as_dict() for c in checks]}, indent=2))
        else:
            for c in checks:
                style = {Status.OK: self.style.SUCCESS, Status.EXPECTED: self.style.WARNING,
                         Status.VIOLATION: self.style.ERROR}.get(c.status, self.style.NOTICE)
                ids = f"  {c.ids[:10]}" if c.ids else ""
                self.stdout.write(f"{style(f'{c.status:<9}')} {c.count:>4}  {c.description}{ids}")
            self.stdout.write(self.style.ERROR(f"{len(broken)} invariant(s) broken") if broken
                              else self.style.SUCCESS("all invariants hold"))
        if broken:
            raise SystemExit(1)
