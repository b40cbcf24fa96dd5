import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common import validate
from common.inputs import OneLineErrors, arg
from retention import registry, services


def parse_rule(value: object) -> str:
    name = validate.text(value, what="the rule", max_length=100)
    if registry.rule(name) is None:
        raise validate.Invalid(f"unknown rule {validate.shown(name)}; use one of: "
                               + ", ".join(r.name for r in registry.rules()))
    return name


def parse_budget(value: object) -> float:
    return validate.seconds(value, what="the budget", high=validate.DAY)


def parse_batch(value: object) -> int:
    return validate.integer(value, what="the batch", low=1, high=100_000)


class Command(OneLineErrors, BaseCommand):
    help = ("Delete what is older than its retention window (settings RETENTION_DAYS, "
            "docs/retention.md): published outbox messages, job runs and results, finished "
            "sagas with their logs and bookings, sent-email ledger rows, experiments, expired "
            "sessions, mail files. Oldest first, PRUNE_BATCH rows per transaction; safe to "
            "stop and run again. The \"prune\" schedule runs it every 10 minutes.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only", action="append", type=arg(parse_rule), metavar="RULE",
                            help="prune only this rule (repeatable): "
                                 + ", ".join(r.name for r in registry.rules()))
        parser.add_argument("--budget", type=arg(parse_budget), metavar="SECONDS",
                            help="stop after this many seconds (the rest waits for the next "
                                 "run); default: until done")
        parser.add_argument("--batch", type=arg(parse_batch), metavar="ROWS",
                            help="rows per transaction (default PRUNE_BATCH)")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="one JSON object: each rule's rows deleted, seconds, rows/s")

    def handle(self, *args, only=None, budget=None, batch=None, as_json=False,
               **options) -> None:
        def progress(o: services.Outcome) -> None:
            if not as_json:
                self.stdout.write(f"  {o.label}: {o.deleted:,} rows so far "
                                  f"({o.seconds:.1f} s)", ending="\r")

        try:
            outcomes = services.prune(only=only, budget=budget, batch=batch, progress=progress)
        except validate.Invalid as e:
            raise CommandError(str(e)) from e
        if as_json:
            self.stdout.write(json.dumps({"rules": [
                {"rule": o.rule, "days": o.days, "deleted": o.deleted,
                 "seconds": round(o.seconds, 3), "rows_per_second": round(o.rate),
                 "complete": o.complete} for o in outcomes]}, indent=2))
            return
        width = max((len(o.label) for o in outcomes), default=0)
        for o in outcomes:
            rate = f", {o.rate:,.0f} rows/s" if o.deleted else ""
            more = "" if o.complete else self.style.WARNING("  (budget spent: more to do)")
            self.stdout.write(f"{o.label:<{width}}  kept {o.days:>3} days: deleted {o.deleted:>9,} "
                              f"in {o.seconds:5.1f} s{rate}{more}")
        total = sum(o.deleted for o in outcomes)
        self.stdout.write(self.style.SUCCESS(f"pruned {total:,} rows"))
