from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import OperationError
from common.inputs import OneLineErrors, arg
from faults.services import InjectedFault
from users import services
from users.models import EmailSend, Mode, User
from users.tasks import create_user_job


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
                            help="run the job body in this process and report what happened")

    def handle(self, *args, name: str, mode: str, fail, crash, sync: bool, **options) -> None:
        try:
            if sync:
                self.run_sync(name, mode, fail, crash)
            else:
                signup_id = services.enqueue_signup(name=name, mode=mode, fail=fail, crash=crash)
                self.stdout.write(self.style.SUCCESS(
                    f"enqueued signup of {name.strip()} ({mode}), signup id {signup_id}; "
                    "watch it with: manage.py show_state"))
        except OperationError as e:
            raise CommandError(str(e)) from e

    def run_sync(self, name: str, mode: str, fail, crash) -> None:
        name, mode, signup_id = services.prepare_signup(name=name, mode=mode, fail=fail,
                                                        crash=crash)
        try:  # the very job body the cluster runs, here in this process
            create_user_job(name=name, mode=mode.value, signup_id=signup_id)
        except InjectedFault as e:
            self.report(name, mode)
            raise CommandError(
                f"the job failed: {e}. On the cluster the queue would retry it "
                "(see what the retry does: run without --sync)") from e
        except services.EmailLost as e:
            self.report(name, mode)
            raise CommandError(str(e)) from e
        self.report(name, mode)

    def report(self, name: str, mode: str) -> None:
        from jobs.selectors import queued_calls
        from outbox.models import OutboxMessage
        from users.selectors import email_store_name

        user = User.objects.filter(username=name).first()
        if user is None:
            self.stdout.write(f"user {name}: not created (the transaction rolled back)")
            return
        emails = EmailSend.objects.filter(user=user).count()
        queued = sum(1 for kw in queued_calls(services.SEND_EMAIL_TASK)
                     if kw.get("user_id") == user.pk)
        outbox = OutboxMessage.objects.pending().filter(payload__user_id=user.pk).count()
        self.stdout.write(self.style.SUCCESS(f"user {name} ({mode}) committed, id {user.pk}"))
        store = email_store_name(services.check_mode(mode))
        self.stdout.write(f"  welcome emails sent: {emails}; email jobs queued ({store}): "
                          f"{queued}; outbox messages pending: {outbox}")
        if emails + queued + outbox == 0:
            self.stdout.write(self.style.ERROR(
                "  nothing will ever send this user's welcome email: it is lost"))
