from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from users import services


class Command(BaseCommand):
    help = (
        "Enqueue again the welcome emails PostgreSQL promised and no store delivered: outbox "
        "messages published but never done (Redis lost the job) are published again, que users "
        "with no email and no job get their job again. dual-write losses stay lost (they are "
        "the demonstration). The PostgreSQL cluster also runs this every minute."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than", type=float, default=None, metavar="SECONDS",
            help="only what is at least this old (default RECONCILE_AFTER_SECONDS, "
                 f"{settings.RECONCILE_AFTER_SECONDS:g} s): younger work may still be on its way")

    def handle(self, *args, older_than: float | None, **options) -> None:
        if older_than is None:
            older_than = settings.RECONCILE_AFTER_SECONDS
        if not (older_than >= 0 and older_than != float("inf")):
            raise CommandError("--older-than must be a number of seconds, 0 or more")
        result = services.reconcile_welcome_emails(older_than=older_than)
        self.stdout.write(self.style.SUCCESS(str(result)))
