import secrets

from django.core.management.base import BaseCommand, CommandParser

from users.models import User


class Command(BaseCommand):
    help = "Create (or reset) the demo superuser with a fresh generated password, printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options) -> None:
        password = secrets.token_urlsafe(12)
        user, created = User.objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        verb = "created" if created else "password reset for"
        self.stdout.write(self.style.SUCCESS(f"{verb} superuser {username!r}"))
        self.stdout.write(f"  username: {username}\n  password: {password}   (shown once; "
                          "`make demo` again makes a new one)")
