from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import OperationError
from common.inputs import OneLineErrors, arg
from common.validate import seconds
from users import services


class Command(OneLineErrors, BaseCommand):
    help = (
        "Enqueue again the welcome emails PostgreSQL promised and no store delivered: outbox "
        "messages published but never done (Redis lost the job) are published again, que users "
        "with no email and no job get their job again. dual-write losses stay lost (they are "
        "the demonstration). The PostgreSQL cluster also runs this every minute."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than", type=arg(seconds, **services.OLDER_THAN), default=None,
            metavar="SECONDS",
            help="only what is at least this old (default RECONCILE_AFTER_SECONDS, "
                 f"{settings.RECONCILE_AFTER_SECONDS:g} s): younger work may still be on its way")

    def handle(self, *args, older_than: float | None, **options) -> None:
        if older_than is None:
            older_than = settings.RECONCILE_AFTER_SECONDS
        try:
            result = services.reconcile_welcome_emails(older_than=older_than)
        except OperationError as e:
            raise CommandError(str(e)) from e
        self.stdout.write(self.style.SUCCESS(str(result)))
