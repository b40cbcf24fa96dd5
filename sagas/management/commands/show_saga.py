import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sagas.models import Event, Saga, State
from sagas.selectors import saga_as_dict


class Command(BaseCommand):
    help = "Show a saga's log in order and the final state of each of its bookings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", type=int, help="saga id (book_trip prints it)")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="machine-readable output")

    def handle(self, *args, id: int, as_json: bool, **options) -> None:
        saga = Saga.objects.filter(pk=id).first()
        if saga is None:
            raise CommandError(f"no saga with id {id}")
        data = saga_as_dict(saga)
        if as_json:
            self.stdout.write(json.dumps(data, indent=2))
            return
        self.stdout.write(f"{saga.kind} saga {saga.pk}: {self.styled(saga.state)} "
                          f"({saga.payload.get('customer', '')})")
        details = dict(saga.log.values_list("seq", "detail"))
        for e in data["log"]:
            detail = details.get(e["seq"]) or ""
            line = f"  {e['seq']:>3} {e['event']:<11} {e['step']:<7} {detail}"
            fail = e["event"] in (Event.STEP_FAIL, Event.COMP_FAIL, Event.SAGA_ABORT)
            self.stdout.write(self.style.ERROR(line) if fail else line)
        self.stdout.write("bookings: " + ", ".join(f"{k} {v}" for k, v in data["bookings"].items()))

    def styled(self, state: str) -> str:
        if state == State.COMPLETED:
            return self.style.SUCCESS(state)
        if state in (State.COMPENSATED, State.RUNNING, State.COMPENSATING):
            return self.style.WARNING(state)
        return self.style.ERROR(state)
