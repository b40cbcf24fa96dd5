import os
import signal
import sys
import time
import traceback

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections, connections

from project import sideconn
from project.stopping import StopFlag
from sagas import services


class Command(BaseCommand):
    help = ("Resume every unfinished saga whose lease ran out: in-doubt idempotent steps run "
            "again (forward), others are compensated (backward).")

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--once", action="store_true", help="one pass, then exit (default)")
        mode.add_argument("--follow", action="store_true",
                          help="keep recovering, a pass every --interval seconds, each in a "
                               "child process (a coordinator that dies takes only that pass "
                               "with it); stops cleanly on SIGTERM/SIGINT")
        parser.add_argument("--interval", type=float, default=1.0,
                            help="seconds between passes with --follow (default 1)")
        parser.add_argument("--batch", type=int, default=10,
                            help="sagas claimed per transaction (default 10)")

    def handle(self, *args, once: bool, follow: bool, interval: float, batch: int,
               **options) -> None:
        if batch < 1:
            raise CommandError("--batch must be 1 or more")
        if not follow:
            self.report(services.recover_sagas(batch=batch), always=True)
            return
        stopping = StopFlag()
        self.stdout.write(f"recovering sagas every {interval:g}s; SIGTERM or Ctrl-C to stop")
        self.stdout.flush()
        while not stopping:
            close_old_connections()
            try:
                if services.any_due():
                    self.pass_in_child(batch)
            except Exception as e:  # a failed pass must not end the recoverer
                self.stderr.write(f"recovery pass failed: {e!r}")
            deadline = time.monotonic() + interval
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.1)
        self.stdout.write("recoverer stopped")

    def pass_in_child(self, batch: int) -> None:
        """Advance the due sagas in a forked child. The recoverer is their coordinator while it
        advances them: if a step kills it (a crash fault, an OOM), only the child dies, and its
        sagas are resumed by a later pass when their lease runs out again."""
        connections.close_all()  # the child must not share the parent's sockets
        sideconn.close()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                self.report(services.recover_sagas(batch=batch), always=False)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            self.stderr.write(f"recovery pass (pid {pid}) died with exit status "
                              f"{os.waitstatus_to_exitcode(status)}; its sagas are resumed "
                              "when their lease runs out")

    def report(self, result: services.RecoveryResult, *, always: bool) -> None:
        if result.count or always:
            states = ", ".join(f"{i}: {s}" for i, s in result.advanced.items())
            self.stdout.write(self.style.SUCCESS(
                f"recovered {result.count} saga(s)" + (f" ({states})" if states else "")))
        self.stdout.flush()
