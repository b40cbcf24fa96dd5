import dataclasses
import json
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from common.db import open_autocommit
from common.errors import OperationError
from common.inputs import OneLineErrors, arg
from common.stopping import Outage, StopFlag
from common.validate import integer
from outbox import services


class Command(OneLineErrors, BaseCommand):
    help = ("Relay due outbox messages: each becomes its topic's job, on the PostgreSQL queue or "
            "on Redis, and is marked published once that store has it.")

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--once", action="store_true",
                          help="relay everything due now, print the counts and exit (default)")
        mode.add_argument("--follow", action="store_true",
                          help="keep relaying, woken by LISTEN/NOTIFY with a poll as fallback; "
                               "stops cleanly on SIGTERM or SIGINT")
        parser.add_argument("--batch", type=arg(integer, **services.BATCH), default=None,
                            help="messages claimed per transaction (default OUTBOX_BATCH_SIZE, "
                                 f"{settings.OUTBOX_BATCH_SIZE}; at most "
                                 f"{services.BATCH['high']:,})")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="with --once: print the counts as one JSON object")

    def handle(self, *args, once: bool, follow: bool, batch: int | None, as_json: bool = False,
               **options) -> None:
        if follow:
            self.follow(batch)
            return
        try:
            result = services.relay_outbox(batch=batch)
        except OperationError as e:
            raise CommandError(str(e)) from e
        if as_json:
            self.stdout.write(json.dumps(dataclasses.asdict(result)))
        else:
            self.stdout.write(self.style.SUCCESS(str(result)))

    def follow(self, batch: int | None) -> None:
        stopping = StopFlag()
        poll = settings.OUTBOX_POLL_SECONDS
        listener = None
        outage = Outage("relay pass", say_error=self._err, say=self._out)
        while not stopping:
            try:
                if listener is None or listener.closed or listener.broken:
                    listener = open_autocommit("outbox-relay-listen")
                    listener.execute(f"LISTEN {services.CHANNEL}")
                    self.stdout.write(f"relaying outbox messages (LISTEN {services.CHANNEL}, "
                                      f"poll {poll}s); SIGTERM or Ctrl-C to stop")
                    self.stdout.flush()
                close_old_connections()
                result = services.relay_outbox(batch=batch)
                outage.ok()
                if result.handled:
                    self.stdout.write(str(result))
                    self.stdout.flush()
                due = services.next_due_in()
                self.wait(listener, poll if due is None else min(poll, max(due, 0.05)),
                          stopping)
            except Exception as e:  # the database went away, a pass failed: keep relaying
                outage.failed(e)
                if listener is not None:
                    listener.close()
                listener = None
                time.sleep(1)
        if listener is not None:
            listener.close()
        self.stdout.write("relay stopped")

    def _err(self, line: str) -> None:
        self.stderr.write(line)
        self.stderr.flush()

    def _out(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def wait(self, listener, seconds: float, stopping: StopFlag) -> None:
        """Sleep up to `seconds`, waking at once on a NOTIFY (or a stop request)."""
        deadline = time.monotonic() + seconds
        while not stopping and time.monotonic() < deadline:
            slice_ = min(1.0, max(0.0, deadline - time.monotonic()))
            if any(True for _ in listener.notifies(timeout=slice_, stop_after=1)):
                return
