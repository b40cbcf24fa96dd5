import json
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import OperationError
from common.inputs import OneLineErrors, arg
from common.validate import INT32_MAX, integer
from experiments import services
from experiments.models import Experiment, Status
from experiments.plan import MODES, PRESETS, RULES

EXPERIMENT_ID = {"what": "the experiment id", "low": 1, "high": INT32_MAX}


def rule(name: str):
    """The parameter's parser as an argparse type (experiments.plan.RULES)."""
    parser, rules = RULES[name]
    return arg(parser, **rules)


class Command(OneLineErrors, BaseCommand):
    help = (
        "Run the talk's demos at scale under random faults, kills and restarts, on a scratch "
        "database with real processes (two PostgreSQL clusters, the Redis cluster, the relay, "
        "the saga recoverer, all supervised), then check what survived: per mode, users, lost "
        "and duplicated emails; sagas completed, compensated or half done; the longest stall. "
        "Each run is kept: admin -> Experiments."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--preset", choices=list(PRESETS),
                            help="smoke (under a minute), talk (the three demos and the trip "
                                 "failures), chaos (10,000 signups per mode, 50 kills, 3 "
                                 "PostgreSQL restarts, 1,000 sagas); options below override it")
        parser.add_argument("--signups", type=rule("signups"), help="signups per mode")
        parser.add_argument("--sagas", type=rule("sagas"), help="trip sagas")
        parser.add_argument("--kills", type=rule("kills"),
                            help="SIGKILLs of a random process: a worker, a dispatcher or a "
                                 "whole cluster (PostgreSQL or Redis), the relay, the recoverer")
        parser.add_argument("--pg-restarts", type=rule("pg_restarts"), dest="pg_restarts",
                            help="immediate-mode restarts of the project-local PostgreSQL")
        parser.add_argument("--terminations", type=rule("terminations"),
                            help="pg_terminate_backend of every session on the scratch database")
        parser.add_argument("--pauses", type=rule("pauses"),
                            help="SIGSTOP of a cluster's dispatcher, longer than the liveness "
                                 "window")
        parser.add_argument("--redis-restarts", type=rule("redis_restarts"),
                            dest="redis_restarts",
                            help="stop and start the project-local Redis")
        parser.add_argument("--fault-rate", type=rule("fault_rate"), dest="fault_rate",
                            help="share (0-1) of signups and sagas carrying a random raise or "
                                 "crash of their own")
        parser.add_argument("--seed", type=rule("seed"),
                            help="the same seed gives the same load and fault schedule "
                                 "(default: random, printed)")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="print the result as one JSON object")
        parser.add_argument("--id", type=arg(integer, **EXPERIMENT_ID),
                            help="run an experiment already recorded (what the admin's start "
                                 "button does)")
        parser.add_argument("--runner", type=arg(integer, **EXPERIMENT_ID),
                            help="(internal) the runner process itself")

    def handle(self, *args, **o) -> None:
        if o["runner"] is not None:
            self.run_runner(o["runner"])
            return
        try:
            if o["id"] is not None:
                experiment = Experiment.objects.filter(pk=o["id"]).first()
                if experiment is None:
                    raise CommandError(f"no experiment {o['id']}")
            else:
                experiment = services.start_experiment(
                    preset=o["preset"], seed=o["seed"], signups=o["signups"], sagas=o["sagas"],
                    kills=o["kills"], pg_restarts=o["pg_restarts"],
                    terminations=o["terminations"], pauses=o["pauses"],
                    redis_restarts=o["redis_restarts"], fault_rate=o["fault_rate"])
        except OperationError as e:  # PlanError, ExperimentError
            raise CommandError(str(e)) from e
        out = sys.stderr if o["as_json"] else sys.stdout
        out.write(f"experiment {experiment.pk}: {services.command_line(experiment)}\n")
        out.flush()
        try:
            experiment = services.execute(experiment, out=out)
        except services.ExperimentError as e:
            raise CommandError(str(e)) from e
        if experiment.status != Status.DONE:
            raise CommandError(f"experiment {experiment.pk} failed: {experiment.error}")
        if o["as_json"]:
            self.stdout.write(json.dumps(experiment.result, indent=2))
        else:
            self.report(experiment)
        if not experiment.passed:
            raise CommandError("targets missed: " + "; ".join(experiment.result["why_not"]))

    def run_runner(self, experiment_id: int) -> None:
        from django.utils import timezone

        from experiments.runner import RESULTS, Runner

        experiment = Experiment.objects.using(RESULTS).get(pk=experiment_id)
        runner = Runner(experiment, out=sys.stdout)
        try:
            result = runner.run()
        except Exception as e:
            runner.recorder.update(status=Status.FAILED, finished_at=timezone.now(),
                                   error=f"{type(e).__name__}: {e}")
            raise
        runner.recorder.update(status=Status.DONE, finished_at=timezone.now(), result=result,
                               passed=result["passed"], timeline=runner.recorder.timeline,
                               samples=runner.recorder.samples, progress=1.0, phase="done")
        sys.stdout.write("\n")

    def report(self, experiment: Experiment) -> None:
        r = experiment.result
        w = self.stdout.write
        w(f"\n{'mode':<11} {'signups':>8} {'users':>7} {'emails':>7} {'lost':>6} "
          f"{'duplicated':>10} {'resent':>7}")
        for mode in MODES:
            m = r["modes"][mode]
            w(f"{mode:<11} {m['signups']:>8} {m['users']:>7} {m['emails']:>7} {m['lost']:>6} "
              f"{m['duplicated']:>10} {m['resent']:>7}")
        w("(resent: the mail server got the same message twice, a process having died between "
          "the hand-off and the commit; same Message-ID, so the receiver drops the copy)")
        explained = r["modes"]["dual-write"]["lost_explained"]
        if r["modes"]["dual-write"]["lost"]:
            w("dual-write losses (the demonstration): "
              + ", ".join(f"{n} {why}" for why, n in explained.items() if n))
        s = r["sagas"]
        w(f"sagas: {s['started']} started, {s['completed']} completed, {s['compensated']} "
          f"compensated, {s['stuck']} stuck, {s['half_done']} half done, "
          f"{s['flights_booked_twice']} flights booked twice")
        f = r["faults"]
        by_target = ", ".join(f"{t} {n}" for t, n in f["kills_by_target"].items())
        w(f"faults: {f['kills']} kills" + (f" ({by_target})" if by_target else "") + ", "
          f"{f['pg_restarts']} PostgreSQL restarts, {f['terminations']} terminations, "
          f"{f['pauses']} pauses, "
          f"{f['redis_restarts']} Redis restarts, {f['signup_faults']} signup and "
          f"{f['saga_faults']} saga faults; supervisor restarts {f['restarts']}; "
          f"reconciliations {f['reconciled']}")
        w(f"outbox dead {r['outbox_dead']}, jobs parked {r['jobs_parked']}; quiesced "
          f"{r['quiesced_after_s']} s after the load; longest stall {r['longest_stall_s']} s")
        w(self.style.SUCCESS("targets met") if r["passed"] else
          self.style.ERROR("targets missed: " + "; ".join(r["why_not"])))
