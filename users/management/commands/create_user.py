import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import OperationError
from common.inputs import OneLineErrors, arg
from faults.services import InjectedFault
from users import services
from users.models import EmailSend, Mode, User
from users.selectors import Verdict, email_outcome
from users.tasks import create_user_job

WAIT = 10.0  # seconds --sync waits for an email on its way
POLL = 0.2
HINTS = {
    "queued in Redis": "a Redis cluster sends it: make run starts one",
    "queued in PostgreSQL": "a cluster sends it: make run starts one",
    "waiting in the outbox": "the relay publishes it: make run, or manage.py relay_outbox",
    "just published": "a Redis cluster sends it",
    "in a worker's hands": "a worker is sending it",
    "on its way to a Redis worker": "a Redis cluster sends it",
}


class Command(OneLineErrors, BaseCommand):
    help = (
        "Sign up a user and send the welcome email, wired as dual-write, outbox or que "
        "(the talk's demo). By default the create-user job goes to the cluster."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", type=arg(services.parse_name),
                            help="the new user's name (letters, digits, @.+-_; at most "
                                 f"{services.NAME_MAX} characters)")
        parser.add_argument("--mode", default=Mode.DUAL_WRITE.value, choices=Mode.values,
                            help="how the welcome email is wired (default dual-write)")
        parser.add_argument("--fail", choices=["part1", "part2"],
                            help="raise in part 1 (inside the transaction) or part 2 (after "
                                 "commit), once, for this signup only")
        parser.add_argument("--crash", choices=["part1", "part2"],
                            help="kill the process (os._exit) in part 1 or part 2, once, for "
                                 "this signup only (one fault per signup: --fail or --crash)")
        parser.add_argument("--sync", action="store_true",
                            help="run the job body in this process and report what happened to "
                                 "the welcome email: sent, on its way (and where), or lost")
        parser.add_argument("--wait", type=arg(services.parse_wait), default=WAIT,
                            metavar="SECONDS",
                            help=f"with --sync: how long to wait for the email to be sent "
                                 f"while it is on its way (default {WAIT:g}; 0: do not wait)")

    def handle(self, *args, name: str, mode: str, fail, crash, sync: bool, wait: float,
               **options) -> None:
        try:
            if sync:
                self.run_sync(name, mode, fail, crash, wait)
            else:
                signup_id = services.enqueue_signup(name=name, mode=mode, fail=fail, crash=crash)
                self.stdout.write(self.style.SUCCESS(
                    f"enqueued signup of {name.strip()} ({mode}), signup id {signup_id}; "
                    "watch it with: manage.py show_state"))
        except OperationError as e:
            raise CommandError(str(e)) from e

    def run_sync(self, name: str, mode: str, fail, crash, wait: float) -> None:
        name, mode, signup_id = services.prepare_signup(name=name, mode=mode, fail=fail,
                                                        crash=crash)
        try:  # the very job body the cluster runs, here in this process
            create_user_job(name=name, mode=mode.value, signup_id=signup_id)
        except InjectedFault as e:
            self.report(name, mode, wait=0, unpushed=True)
            raise CommandError(
                f"the job failed: {e}. On the cluster the queue would retry it "
                "(see what the retry does: run without --sync)") from e
        except services.EmailLost as e:
            self.report(name, mode, wait=0, unpushed=True)
            raise CommandError(str(e)) from e
        self.report(name, mode, wait=wait)

    def report(self, name: str, mode: str, *, wait: float, unpushed: bool = False) -> None:
        """The welcome email's true outcome: read in one snapshot, after waiting up to `wait`
        seconds while it is on its way (a job in a queue or in a worker's hands, a message in
        the outbox or just published are not lost)."""
        user = User.objects.filter(username=name).first()
        if user is None:
            self.stdout.write(f"user {name}: not created (the transaction rolled back)")
            return
        self.stdout.write(self.style.SUCCESS(f"user {name} ({mode}) committed, id {user.pk}"))
        # unpushed: the job body failed before a dual-write job reached Redis, so none will
        outcome = email_outcome(user, unpushed=unpushed)
        if outcome.verdict == Verdict.IN_FLIGHT and wait > 0:
            self.stdout.write(f"  welcome email {outcome.where}: waiting up to {wait:g} s for "
                              "it to be sent")
            deadline = time.monotonic() + wait
            while outcome.verdict == Verdict.IN_FLIGHT and time.monotonic() < deadline:
                time.sleep(POLL)
                outcome = email_outcome(user, unpushed=unpushed)
        self.stdout.write(self.outcome_line(outcome))

    def outcome_line(self, outcome) -> str:
        if outcome.verdict == Verdict.SENT:
            sent = EmailSend.objects.filter(user_id=outcome.id).first()  # None: pruned since
            return self.style.SUCCESS("  welcome email sent"
                                      + (f" ({sent.message_id})" if sent is not None else ""))
        if outcome.verdict == Verdict.IN_FLIGHT:
            return self.style.WARNING(f"  welcome email on its way, not sent yet: {outcome.where}"
                                      f" ({HINTS.get(outcome.where, 'a worker sends it')})")
        if outcome.verdict == Verdict.LOST_BY_STORE:
            return self.style.WARNING("  its outbox message was published and Redis lost the "
                                      "job: manage.py reconcile publishes it again")
        if outcome.verdict == Verdict.DUPLICATED:
            return self.style.ERROR("  the welcome email was sent more than once")
        return self.style.ERROR("  nothing will ever send this user's welcome email: it is lost")
