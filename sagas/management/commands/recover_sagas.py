import os
import select
import signal
import sys
import time
import traceback

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections, connections

from common import sideconn
from common.inputs import OneLineErrors, arg
from common.stopping import Outage, StopFlag
from common.validate import DAY, integer, seconds
from pgbroker import history
from sagas import recovery

INTERVAL = {"what": "the interval", "high": 3600}
SAGA_TIMEOUT = {"what": "the saga timeout", "high": DAY}


class Command(OneLineErrors, BaseCommand):
    help = ("Resume every unfinished saga whose lease ran out: in-doubt idempotent steps run "
            "again (forward), others are compensated (backward).")

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--once", action="store_true", help="one pass, then exit (default)")
        mode.add_argument("--follow", action="store_true",
                          help="keep recovering, a pass every --interval seconds, each in a "
                               "child process (a coordinator that dies takes only that pass "
                               "with it); stops cleanly on SIGTERM/SIGINT")
        parser.add_argument("--interval", type=arg(seconds, **INTERVAL), default=1.0,
                            help="seconds between passes with --follow, above 0 (default 1, "
                                 "at most an hour)")
        parser.add_argument("--batch", type=arg(integer, **recovery.BATCH), default=10,
                            help="sagas claimed per transaction (default 10, at most "
                                 f"{recovery.BATCH['high']:,})")
        parser.add_argument("--saga-timeout", type=arg(seconds, **SAGA_TIMEOUT), default=None,
                            metavar="SECONDS",
                            help="with --follow: a pass that finishes no saga for this long "
                                 "(a hung service call) is killed, and its sagas are resumed "
                                 "when their lease runs out (default: the cluster's task "
                                 f"timeout, {settings.Q_TIMEOUT} s)")

    def handle(self, *args, once: bool, follow: bool, interval: float, batch: int,
               saga_timeout: float | None, **options) -> None:
        if saga_timeout is None:
            saga_timeout = float(settings.Q_TIMEOUT)  # 1 s to a day (settings check it)
        if not follow:
            self.report(recovery.recover_sagas(batch=batch), always=True)
            return
        stopping = StopFlag()
        self.stdout.write(f"recovering sagas every {interval:g}s; SIGTERM or Ctrl-C to stop")
        self.stdout.flush()
        outage = Outage("recovery pass", say_error=self.stderr.write, say=self.stdout.write)
        while not stopping:
            close_old_connections()
            try:
                if recovery.any_due():
                    self.pass_in_child(batch, saga_timeout)
                outage.ok()
            except Exception as e:  # a failed pass must not end the recoverer
                outage.failed(e)
            deadline = time.monotonic() + interval
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.1)
        self.stdout.write("recoverer stopped")

    def pass_in_child(self, batch: int, saga_timeout: float) -> None:
        """Advance the due sagas in a forked child. The recoverer is their coordinator while it
        advances them: if a step kills it (a crash fault, an OOM), only the child dies, and its
        sagas are resumed by a later pass when their lease runs out again. The child reports
        each saga it finished on a pipe; one silent for `saga_timeout` seconds is stuck in a
        call that does not return, and is killed like a timed-out cluster worker."""
        connections.close_all()  # the child must not share the parent's sockets
        sideconn.close()
        beat_r, beat_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(beat_r)
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)

                def beat(saga_id: int, state: str) -> None:  # a sign of life per saga
                    os.write(beat_w, b".")

                self.report(recovery.recover_sagas(batch=batch, on_advanced=beat), always=False)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(beat_w)
        killed = False
        try:
            while True:  # until the child closes its end (it exited) or falls silent
                readable, _, _ = select.select([beat_r], [], [], saga_timeout)
                if not readable:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
                    self.stderr.write(
                        f"recovery pass (pid {pid}) finished no saga in {saga_timeout:g} s "
                        "(a service call that does not return?); killed it, its sagas are "
                        "resumed when their lease runs out")
                    break
                if not os.read(beat_r, 64):
                    break
        finally:
            os.close(beat_r)
        _, status = os.waitpid(pid, 0)
        if killed or os.waitstatus_to_exitcode(status) != 0:  # its step ended with it
            history.record("died", "", worker=pid,
                           how=f"exit status {os.waitstatus_to_exitcode(status)}")
        if not killed and os.waitstatus_to_exitcode(status) != 0:
            self.stderr.write(f"recovery pass (pid {pid}) died with exit status "
                              f"{os.waitstatus_to_exitcode(status)}; its sagas are resumed "
                              "when their lease runs out")

    def report(self, result: recovery.RecoveryResult, *, always: bool) -> None:
        if result.count or always:
            states = ", ".join(f"{i}: {s}" for i, s in result.advanced.items())
            self.stdout.write(self.style.SUCCESS(
                f"recovered {result.count} saga(s)" + (f" ({states})" if states else "")))
        self.stdout.flush()
