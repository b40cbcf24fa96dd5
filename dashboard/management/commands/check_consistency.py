import json

from django.core.management.base import BaseCommand, CommandParser

from common.inputs import OneLineErrors
from dashboard.registry import Status, violations
from dashboard.selectors import consistency_checks


class Command(OneLineErrors, BaseCommand):
    help = ("Check the invariants of docs/design.md against the database: exit 0 when they hold, "
            "1 when any is broken (dual-write's lost emails are expected, not violations).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="each check with its status, count and offending ids")

    def handle(self, *args, as_json: bool, **options) -> None:
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
