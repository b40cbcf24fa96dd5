import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from common.inputs import OneLineErrors, arg
from common.validate import choice, seconds
from ops import programs
from ops.health import program_verdict
from pgbroker.status import STALE

STALE_RULES = {"what": "the staleness", "high": 3600}


class Command(OneLineErrors, BaseCommand):
    help = ("Is a long-running program live (its status file written in the last --stale "
            "seconds by a process that runs), or ready to work (--ready)? Prints one line per "
            "program, with the reason when it is not; exit status 0 when every one asked is, "
            "1 when not. For supervisord, systemd or a container probe (docs/metrics.md). The "
            "web server has HTTP probes instead: /healthz/live, /healthz/ready.")
    requires_system_checks: list[str] = []  # a probe reads files: it needs no database either

    def add_arguments(self, parser: CommandParser) -> None:
        names = programs.names()
        parser.add_argument("program", nargs="*",
                            type=arg(choice, what="program", choices=names),
                            help=f"one or more of: {', '.join(names)} (default: all of them)")
        parser.add_argument("--ready", action="store_true",
                            help="ask whether it is ready to work (default: whether it is live)")
        parser.add_argument("--stale", type=arg(seconds, **STALE_RULES), default=STALE,
                            metavar="SECONDS",
                            help="a status file older than this is a process that stopped "
                                 f"working (default {STALE:g} s, at most an hour)")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="one JSON object per program instead of a line")

    def handle(self, *args, program: list[str], ready: bool, stale: float,
               as_json: bool = False, **options) -> None:
        ok = True
        for name in program or programs.names():
            found = program_verdict(name, stale=stale)
            ok = ok and (found.ready if ready else found.live)
            if as_json:
                self.stdout.write(json.dumps({
                    "program": name, "live": found.live, "ready": found.ready,
                    "reason": found.reason, "age": found.age,
                    "file": str(programs.status_file(settings.STATUS_DIR, name)),
                    "status": found.status.as_dict() if found.status else None}))
            else:
                self.stdout.write(found.line(name))
        if not ok:
            raise SystemExit(1)
