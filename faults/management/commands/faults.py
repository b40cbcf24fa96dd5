from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import OperationError
from common.inputs import OneLineErrors, arg
from common.validate import integer
from faults import selectors, services, stores
from faults.models import Action

MS_NOT_DELAY = "--ms is the length of a delay: it goes with --action delay only"


class Command(OneLineErrors, BaseCommand):
    help = ("List, arm and disarm the fault points (what a worker does when it passes one); "
            "break Redis (`faults redis stop`).")

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True,
                                    metavar="list|arm|disarm|disarm-all|redis")
        sub.add_parser("list", help="every fault point, with how it is armed")
        arm = sub.add_parser("arm", help="arm a point for whatever passes it next")
        arm.add_argument("name", help="fault point, e.g. signup.part2 (see 'faults list')")
        arm.add_argument("--action", required=True, choices=Action.values,
                         help="raise an exception, crash the process (os._exit), or sleep")
        arm.add_argument("--times", type=arg(integer, **services.TIMES), default=None,
                         help="fire this many times, then disarm (default: always; at most "
                              f"{services.MAX_TIMES:,})")
        arm.add_argument("--ms", type=arg(integer, **services.DELAY_MS), default=None,
                         help="with --action delay: how long, in milliseconds (default "
                              f"{services.DEFAULT_DELAY_MS}, at most {services.MAX_DELAY_MS:,})")
        disarm = sub.add_parser("disarm", help="disarm one point")
        disarm.add_argument("name")
        sub.add_parser("disarm-all", help="disarm every point, including per-job faults")
        red = sub.add_parser("redis", help="break the second store: stop or start Redis, make "
                                           "it refuse writes, or lose its queued jobs")
        red.add_argument("redis_action", metavar="ACTION",
                         choices=[a for a, _ in stores.Action.CHOICES],
                         help="; ".join(f"{a}: {label}" for a, label in stores.Action.CHOICES))

    def handle(self, *args, verb: str, **options) -> None:
        try:
            if verb == "list":
                self.list()
            elif verb == "arm":
                self.arm(options["name"], options["action"], options["times"], options["ms"])
            elif verb == "disarm":
                was = services.disarm(point=options["name"])
                self.stdout.write(self.style.SUCCESS(
                    f"disarmed {options['name']}" if was else f"{options['name']} was not armed"))
            elif verb == "redis":
                self.stdout.write(self.style.SUCCESS(
                    stores.act(action=options["redis_action"])))
            elif verb == "disarm-all":
                n = services.disarm_all()
                self.stdout.write(self.style.SUCCESS(f"disarmed {n} fault(s)"))
        except OperationError as e:
            raise CommandError(str(e)) from e

    def arm(self, point: str, action: str, times: int | None, ms: int | None) -> None:
        if ms is not None and action != Action.DELAY:
            raise CommandError(MS_NOT_DELAY)
        delay_ms = services.DEFAULT_DELAY_MS if ms is None else ms
        services.arm(point=point, action=action, times=times, delay_ms=delay_ms)
        what = action
        if action == Action.DELAY:
            what += f" {delay_ms} ms" + (" (the default; --ms N to change it)" if ms is None
                                         else "")
        times_text = "always" if times is None else f"{times} time(s)"
        self.stdout.write(self.style.SUCCESS(f"armed {point}: {what}, {times_text}"))

    def list(self) -> None:
        from faults.points import POINTS

        services.sync_points()
        if not services.enabled():
            self.stdout.write(self.style.WARNING("fault injection is off (FAULTS_ENABLED=0)"))
        for fault in selectors.global_faults():
            if fault.is_armed:
                left = "always" if fault.remaining is None else f"{fault.remaining} left"
                extra = f" {fault.delay_ms}ms" if fault.action == Action.DELAY else ""
                state = self.style.ERROR(f"ARMED {fault.action}{extra} ({left})")
            else:
                state = "off"
            self.stdout.write(f"{fault.point:<22} {state:<28} fired {fault.fired:>3}  "
                              f"{POINTS.get(fault.point, '(no longer declared)')}")
