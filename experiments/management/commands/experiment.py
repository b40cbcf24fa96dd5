import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import OperationError
from common.inputs import OneLineErrors, arg
from common.validate import INT32_MAX, integer
from experiments import services
from experiments.models import Experiment, Status
from experiments.plan import BOTH, MODES, PRESETS, RULES, STYLES

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
        "and duplicated emails; sagas completed, compensated or half done, per saga style "
        "(--style both: orchestrated and choreographed side by side); the longest stall. "
        "Each run is kept: admin -> Experiments."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--preset", choices=list(PRESETS),
                            help="smoke (under a minute), talk (the three demos and the trip "
                                 "failures), chaos (10,000 signups per mode, 50 kills, 3 "
                                 "PostgreSQL restarts, 1,000 sagas), jepsen (3 simulated "
                                 "hosts, partitions, pauses, clock skew, kills, a PostgreSQL "
                                 "restart; needs root); options below override it")
        parser.add_argument("--signups", type=rule("signups"), help="signups per mode")
        parser.add_argument("--sagas", type=rule("sagas"), help="trip sagas")
        parser.add_argument("--kills", type=rule("kills"),
                            help="SIGKILLs of a random process: a worker, a dispatcher or a "
                                 "whole cluster (PostgreSQL or Redis), the relay, the recoverer")
        parser.add_argument("--pg-restarts", type=rule("pg_restarts"), dest="pg_restarts",
                            help="immediate-mode restarts of the scratch database's "
                                 "PostgreSQL, one the experiment starts for the run (never the "
                                 "project's)")
        parser.add_argument("--terminations", type=rule("terminations"),
                            help="pg_terminate_backend of every session on the scratch database")
        parser.add_argument("--pauses", type=rule("pauses"),
                            help="SIGSTOP of a cluster's dispatcher, longer than the liveness "
                                 "window")
        parser.add_argument("--redis-restarts", type=rule("redis_restarts"),
                            dest="redis_restarts",
                            help="stop and start a Redis the experiment starts for the run "
                                 "(never the project's)")
        parser.add_argument("--fault-rate", type=rule("fault_rate"), dest="fault_rate",
                            help="share (0-1) of signups and sagas carrying a random raise or "
                                 "crash of their own")
        parser.add_argument("--seconds", type=rule("seconds"),
                            help="spread the load over at least this many seconds (default: "
                                 "as fast as the machine follows), room for long partitions "
                                 "and pauses")
        parser.add_argument("--hosts", type=rule("hosts"),
                            help="simulated worker hosts over real TCP (devtools/lab.py, needs "
                                 "root): PostgreSQL, Redis and the relay get hosts of their "
                                 "own; 0 (the default) runs everything on this machine")
        parser.add_argument("--partitions", type=rule("partitions"),
                            help="a worker host cut off, mostly from PostgreSQL (packets "
                                 "dropped silently), for --partition-s seconds (needs --hosts)")
        parser.add_argument("--partition-s", type=rule("partition_s"), dest="partition_s",
                            help="how long each partition lasts, in seconds (default 15)")
        parser.add_argument("--group-pauses", type=rule("group_pauses"), dest="group_pauses",
                            help="SIGSTOP of a worker host's whole PostgreSQL cluster (main "
                                 "process, dispatcher and workers) for --group-pause-s seconds")
        parser.add_argument("--group-pause-s", type=rule("group_pause_s"), dest="group_pause_s",
                            help="how long each group pause lasts, in seconds (default 15)")
        parser.add_argument("--clock-skew-s", type=rule("clock_skew_s"), dest="clock_skew_s",
                            help="one worker host's wall clock shifted by this many seconds "
                                 "for the whole run (libfaketime)")
        parser.add_argument("--style", choices=list(STYLES),
                            help="how the trip sagas run: orchestrated (a coordinator; the "
                                 "default), choreographed (each service reacts to the event "
                                 f"of the one before), or {BOTH}: every trip once in each "
                                 "style, with the same faults, reported side by side "
                                 "(presets chaos and jepsen: both)")
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
                    preset=o["preset"], style=o["style"], **{name: o[name] for name in RULES})
        except OperationError as e:  # PlanError, ExperimentError
            raise CommandError(str(e)) from e
        out = sys.stderr if o["as_json"] else sys.stdout
        out.write(f"experiment {experiment.pk}: {services.command_line(experiment)}\n")
        out.flush()
        try:
            experiment = services.execute(experiment, out=out)
        except services.ExperimentError as e:
            raise CommandError(str(e)) from e
        result = experiment.result
        if experiment.status != Status.DONE or result is None:
            raise CommandError(f"experiment {experiment.pk} failed: {experiment.error}")
        if o["as_json"]:
            self.stdout.write(json.dumps(result, indent=2))
        else:
            self.report(result)
        if not experiment.passed:
            raise CommandError("targets missed: " + "; ".join(result["why_not"]))

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

    def report(self, r: dict[str, Any]) -> None:
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
        if r.get("sagas_by_style"):
            self.report_styles(r["sagas_by_style"])
        f = r["faults"]
        by_target = ", ".join(f"{t} {n}" for t, n in f["kills_by_target"].items())
        w(f"faults: {f['kills']} kills" + (f" ({by_target})" if by_target else "") + ", "
          f"{f['pg_restarts']} PostgreSQL restarts, {f['terminations']} terminations, "
          f"{f['pauses']} pauses, "
          f"{f['redis_restarts']} Redis restarts, {f['signup_faults']} signup and "
          f"{f['saga_faults']} saga faults; supervisor restarts {f['restarts']}; "
          f"reconciliations {f['reconciled']}")
        if f.get("partitions") or f.get("group_pauses") or f.get("clock_skew_s"):
            w(f"network and time: {f['partitions']} partitions, {f['group_pauses']} "
              f"whole-cluster pauses" + (f", {f['skewed_host']}'s clock {f['clock_skew_s']:+g} s"
                                         if f.get("clock_skew_s") else ""))
        h = r.get("history")
        if h:
            w(f"job history: {h['attempts']} attempts of {h['jobs']} jobs and saga steps on "
              f"{', '.join(h['hosts'])}; ran in two places at once: {h['ran_concurrently']}"
              + (f"; after a partition, its jobs taken back within {h['taken_back_p50_s']} s "
                 f"(p50), {h['taken_back_max_s']} s (max)"
                 if h.get("taken_back_after_partition") else "")
              + (f", running elsewhere within {h['redelivery_p50_s']} s (p50), "
                 f"{h['redelivery_max_s']} s (max)" if h["redelivered_after_partition"] else "")
              + f"; longest wait to start {h['longest_wait_s']} s")
            for example in h["concurrent_examples"]:
                w(self.style.ERROR(f"  {example}"))
        w(f"outbox dead {r['outbox_dead']}, jobs parked {r['jobs_parked']}; quiesced "
          f"{r['quiesced_after_s']} s after the load; longest stall {r['longest_stall_s']} s")
        w(self.style.SUCCESS("targets met") if r["passed"] else
          self.style.ERROR("targets missed: " + "; ".join(r["why_not"])))

    def report_styles(self, styles: dict[str, dict[str, Any]]) -> None:
        """The saga styles side by side (experiments.styles says how each column is counted)."""
        w = self.stdout.write
        w(f"\n{'style':<14} {'started':>7} {'completed':>9} {'compensated':>11} {'stuck':>5} "
          f"{'half done':>9} {'flights x2':>10} {'p50':>8} {'p99':>8} {'msgs/saga':>9} "
          f"{'commits/saga':>12}")
        for style, s in styles.items():
            p50, p99 = (f"{v:.3f} s" if v is not None else "-"
                        for v in (s["outcome_p50_s"], s["outcome_p99_s"]))
            w(f"{style:<14} {s['started']:>7} {s['completed']:>9} {s['compensated']:>11} "
              f"{s['stuck']:>5} {s['half_done']:>9} {s['flights_booked_twice']:>10} "
              f"{p50:>8} {p99:>8} {s['messages_per_saga']:>9.2f} {s['commits_per_saga']:>12.2f}")
        w("(p50, p99: request to outcome, SAGA_START to SAGA_END, of the sagas that ended; "
          "msgs: outbox messages (choreographed) or coordinator jobs (orchestrated); commits: "
          "distinct last writers of its rows, a lower bound)")
