from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import OperationError
from sagas import services
from sagas.definitions import TRIP
from sagas.models import State
from sagas.selectors import saga_as_dict

SERVICES = [s.name for s in TRIP.steps]


class Command(BaseCommand):
    help = "Start a trip saga (book hotel, car, flight) for CUSTOMER; prints the saga id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("customer", help="who travels")
        parser.add_argument("--fail", choices=SERVICES,
                            help="this service's booking fails once (this saga only)")
        parser.add_argument("--crash", choices=SERVICES,
                            help="the coordinator process dies (os._exit) right after this "
                                 "service booked, once (this saga only)")
        parser.add_argument("--slow", choices=SERVICES,
                            help="this service answers after the step deadline, once")
        parser.add_argument("--wait", action="store_true",
                            help="wait for the saga to end and print the outcome")
        parser.add_argument("--timeout", type=float, default=120,
                            help="seconds --wait waits (default 120)")

    def handle(self, *args, customer: str, fail, crash, slow, wait: bool, timeout: float,
               **options) -> None:
        try:
            saga = services.start_trip(customer=customer, fail=fail, crash=crash, slow=slow)
        except OperationError as e:
            raise CommandError(str(e)) from e
        self.stdout.write(self.style.SUCCESS(f"saga {saga.pk} started"))
        if not wait:
            self.stdout.write(f"follow it with: manage.py show_saga {saga.pk}")
            return
        saga = services.wait_for(saga_id=saga.pk, timeout=timeout)
        data = saga_as_dict(saga)
        for e in data["log"]:
            self.stdout.write(f"  {e['seq']:>3} {e['event']:<11} {e['step']}")
        bookings = ", ".join(f"{k} {v}" for k, v in data["bookings"].items())
        self.stdout.write(f"saga {saga.pk}: {saga.state} ({bookings})")
        if saga.state == State.STUCK:
            raise CommandError(
                f"saga {saga.pk} is stuck: a compensation keeps failing. Fix the cause, then "
                "retry it from the admin (Sagas > Retry selected stuck sagas).")
        if not saga.is_final:
            raise CommandError(
                f"saga {saga.pk} is still {saga.state} after {timeout:g}s: is the cluster "
                "running (make run)?")
