import secrets

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from common.inputs import OneLineErrors, arg
from users.models import User
from users.services import parse_name

NOT_A_SUPERUSER = ("user {name!r} exists and is not a superuser: refusing to make it one or to "
                   "change its password (choose another --username)")
UNCHANGED = ("superuser {name!r} already exists: its password is unchanged (--reset gives it a "
             "new one)")


class Command(OneLineErrors, BaseCommand):
    help = ("Create the demo superuser with a fresh generated password, printed once. An "
            "existing superuser keeps its password unless --reset is given; an existing user "
            "who is not a superuser is never touched.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", type=arg(parse_name),
                            help="default admin")
        parser.add_argument("--reset", action="store_true",
                            help="give an existing superuser a new password")

    def handle(self, *args, username: str, reset: bool, **options) -> None:
        password = secrets.token_urlsafe(12)
        with transaction.atomic():
            user = User.objects.select_for_update().filter(username=username).first()
            if user is not None and not user.is_superuser:
                raise CommandError(NOT_A_SUPERUSER.format(name=username))
            if user is not None and not reset:
                self.stdout.write(self.style.WARNING(UNCHANGED.format(name=username)))
                return
            if user is None:
                User.objects.create_superuser(username=username, password=password)
                verb = "created superuser"
            else:
                user.is_staff = True
                user.set_password(password)
                user.save(update_fields=["is_staff", "password"])
                verb = "new password for superuser"
        self.stdout.write(self.style.SUCCESS(f"{verb} {username!r}"))
        self.stdout.write(f"  username: {username}\n  password: {password}   (shown once; "
                          "`manage.py demo_superuser --reset` makes a new one)")
