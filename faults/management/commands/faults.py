from django.core.management.base import BaseCommand, CommandError, CommandParser

from faults import selectors, services, stores
from faults.models import Action


class Command(BaseCommand):
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
        arm.add_argument("--times", type=int, default=None,
                         help="fire this many times, then disarm (default: always)")
        arm.add_argument("--ms", type=int, default=1000, help="delay in milliseconds (delay)")
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
                services.arm(point=options["name"], action=options["action"],
                             times=options["times"], delay_ms=options["ms"])
                times = "always" if options["times"] is None else f"{options['times']} time(s)"
                self.stdout.write(self.style.SUCCESS(
                    f"armed {options['name']}: {options['action']}, {times}"))
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
        except services.FaultError as e:
            raise CommandError(str(e)) from e

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
