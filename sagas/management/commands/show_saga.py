import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.inputs import OneLineErrors, arg
from common.validate import integer
from sagas.models import Event, Saga, State, Style
from sagas.selectors import saga_as_dict

SAGA_ID = {"what": "the saga id"}


class Command(OneLineErrors, BaseCommand):
    help = ("Show a saga's log in order, each event with its time (to the millisecond), the "
            "time since the saga started and the coordinator's pid, and the final state of "
            "each of its bookings.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", type=arg(integer, **SAGA_ID),
                            help="saga id (book_trip prints it)")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="machine-readable output: all the text shows, and the payload")

    def handle(self, *args, id: int, as_json: bool, **options) -> None:
        saga = Saga.objects.filter(pk=id).first()
        if saga is None:
            raise CommandError(f"no saga with id {id}")
        data = saga_as_dict(saga)
        if as_json:
            self.stdout.write(json.dumps(data, indent=2))
            return
        started = data["log"][0]["at"] if data["log"] else data["created_at"]
        took = data["log"][-1]["elapsed"] if data["log"] else 0
        self.stdout.write(f"{saga.kind} saga {saga.pk} ({saga.style}): {self.styled(saga.state)} "
                          f"(customer {data['customer']}), started {started[:10]} "
                          f"{started[11:23]}, last event +{took:.3f} s")
        self.stdout.write(f"  {'seq':>3} {'time':<12} {'elapsed':>9} {'pid':>7} "
                          f"{'event':<11} {'step':<7} detail")
        for e in data["log"]:
            line = (f"  {e['seq']:>3} {e['at'][11:23]:<12} {'+' + format(e['elapsed'], '.3f'):>9}"
                    f" {e['pid']:>7} {e['event']:<11} {e['step']:<7} {e['detail']}").rstrip()
            fail = e["event"] in (Event.STEP_FAIL, Event.COMP_FAIL, Event.SAGA_ABORT)
            self.stdout.write(self.style.ERROR(line) if fail else line)
        self.stdout.write("bookings: " + ", ".join(f"{k} {v}" for k, v in data["bookings"].items()))
        if saga.state in (State.RUNNING, State.COMPENSATING) and saga.style == Style.CHOREOGRAPHED:
            self.stdout.write("waiting for its next service's reaction (a queued job: the queue "
                              "runs it again if it dies)")
        elif saga.state in (State.RUNNING, State.COMPENSATING) and saga.lease_until is not None:
            self.stdout.write(f"lease until {data['lease_until'][11:23]} (recovery resumes it "
                              "after that if its coordinator is gone)")

    def styled(self, state: str) -> str:
        if state == State.COMPLETED:
            return self.style.SUCCESS(state)
        if state in (State.COMPENSATING, State.RUNNING, State.COMPENSATED):
            return self.style.WARNING(state)
        return self.style.ERROR(state)
