import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import OperationError
from common.inputs import OneLineErrors, arg
from common.validate import seconds, text
from sagas import services
from sagas.definitions import TRIP
from sagas.models import SagaLog, State, Style
from travel.services import booking_states

SERVICES = [s.name for s in TRIP.steps]
QUIET_SECONDS = 5  # with --wait: say "still waiting" after this long without a new event
NEVER_PICKED_UP = ("saga {id} is still {state} after {timeout:g} s and no coordinator has "
                   "picked it up: is a cluster running (make run)? It runs when one starts; "
                   "follow it with: manage.py show_saga {id}")
STILL_RUNNING = ("saga {id} is still {state} after {timeout:g} s (it goes on without us): "
                 "follow it with: manage.py show_saga {id}")


class Command(OneLineErrors, BaseCommand):
    help = "Start a trip saga (book hotel, car, flight) for CUSTOMER; prints the saga id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("customer", type=arg(text, **services.CUSTOMER),
                            help=f"who travels (at most {services.CUSTOMER_MAX} characters)")
        parser.add_argument("--fail", choices=SERVICES,
                            help="this service's booking fails once (this saga only)")
        parser.add_argument("--crash", choices=SERVICES,
                            help="the process booking it (the coordinator, or the service's "
                                 "reaction) dies (os._exit) right after this service booked, "
                                 "once (this saga only)")
        parser.add_argument("--slow", choices=SERVICES,
                            help="this service answers after the step deadline, once")
        parser.add_argument("--style", choices=Style.values, default=Style.ORCHESTRATED,
                            help="orchestrated: a coordinator tells each service what to do "
                                 "(the default); choreographed: each service reacts to the "
                                 "event of the one before it, through the outbox (needs the "
                                 "relay: make run starts one)")
        parser.add_argument("--wait", action="store_true",
                            help="wait for the saga to end, printing its log as it goes")
        parser.add_argument("--timeout", type=arg(seconds, **services.TIMEOUT), default=120,
                            help="seconds --wait waits, above 0 (default 120); the saga goes "
                                 "on after it")

    def handle(self, *args, customer: str, fail, crash, slow, style: str, wait: bool,
               timeout: float, **options) -> None:
        try:
            saga = services.start_trip(customer=customer, fail=fail, crash=crash, slow=slow,
                                       style=style)
        except OperationError as e:
            raise CommandError(str(e)) from e
        self.stdout.write(self.style.SUCCESS(f"saga {saga.pk} started ({saga.style})"))
        if not wait:
            self.stdout.write(f"follow it with: manage.py show_saga {saga.pk}")
            return
        self.stdout.write(f"waiting for saga {saga.pk} (up to {timeout:g} s; Ctrl-C stops the "
                          f"wait, not the saga): "
                          f"{services.expect(fail=fail, crash=crash, slow=slow, style=style)}")
        self.stdout.flush()
        saga = self.follow(saga.pk, timeout)
        bookings = ", ".join(f"{k} {v}" for k, v in booking_states(saga_id=saga.pk).items())
        self.stdout.write(f"saga {saga.pk}: {saga.state} ({bookings})")
        if saga.state == State.STUCK:
            raise CommandError(
                f"saga {saga.pk} is stuck: a compensation keeps failing. Fix the cause, then "
                "retry it from the admin (Sagas > Retry selected stuck sagas).")
        if not saga.is_final:
            picked_up = saga.log.exclude(event="SAGA_START").exists()
            raise CommandError((STILL_RUNNING if picked_up else NEVER_PICKED_UP).format(
                id=saga.pk, state=saga.state, timeout=timeout))

    def follow(self, saga_id: int, timeout: float):
        """Print each log event as it is written, with the time since the saga started, and a
        line when nothing has happened for a while."""
        started = time.monotonic()
        last_at = last_said = started
        last_entry: SagaLog | None = None

        def on_event(entry: SagaLog) -> None:
            nonlocal last_at, last_said, last_entry
            now = time.monotonic()
            last_at, last_said, last_entry = now, now, entry
            self.stdout.write(f"  {now - started:6.1f}s {entry.seq:>3} {entry.event:<11} "
                              f"{entry.step:<7} {entry.detail}".rstrip())
            self.stdout.flush()

        def on_poll() -> None:
            nonlocal last_said
            now = time.monotonic()
            if now - last_said >= QUIET_SECONDS:
                last_said = now
                after = last_entry
                what = f"{after.event} {after.step}".strip() if after else "the start"
                self.stdout.write(f"  {now - started:6.1f}s     still waiting: nothing new for "
                                  f"{now - last_at:.0f} s (last: {what})")
                self.stdout.flush()

        return services.wait_for(saga_id=saga_id, timeout=timeout, on_event=on_event,
                                 on_poll=on_poll)
