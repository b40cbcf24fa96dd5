"""The plan of an experiment: decided by its seed, refused when it cannot run."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from experiments.plan import PRESETS, Params, PlanError, make_plan, params_for


def test_the_same_seed_gives_the_same_load_and_schedule_and_another_seed_another():
    a = make_plan(params_for(preset="chaos", seed=42))
    b = make_plan(params_for(preset="chaos", seed=42))
    c = make_plan(params_for(preset="chaos", seed=43))
    assert a.events == b.events
    assert a.signups == b.signups
    assert a.trips == b.trips
    assert a.events != c.events


def test_the_chaos_preset_is_what_the_issue_asks_for():
    plan = make_plan(params_for(preset="chaos", seed=1))
    assert len(plan.signups) == 3 * 10_000
    assert len(plan.trips) == 1_000
    kinds = [e.kind for e in plan.events]
    assert kinds.count("kill") >= 50
    assert kinds.count("pg_restart") == 3
    assert all(0 < e.at < plan.load_seconds for e in plan.events), "faults fall inside the load"
    # coordinator kills at every boundary of a saga's log, each step's and compensation's
    points = {p for t in plan.trips for p, _ in t.faults}
    for service in ("hotel", "car", "flight"):
        assert {f"saga.after.STEP_START.{service}", f"saga.{service}.book",
                f"saga.after.COMP_START.{service}", f"saga.{service}.cancelled",
                f"saga.{service}.cancel"} <= points
    assert "saga.after.SAGA_ABORT" in points


def test_the_talk_preset_is_the_talks_demos():
    plan = make_plan(params_for(preset="talk", seed=1))
    assert {(s.name, s.fail) for s in plan.signups if s.mode == "que"} == {
        ("mike-que", None), ("kevin-que", "part1"), ("matt-que", "part2")}
    assert [(t.customer, t.faults) for t in plan.trips] == [
        ("alice", ()), ("bob", (("saga.car.book", "raise"),)),
        ("carol", (("saga.hotel.book", "crash"),)), ("dave", (("saga.flight.book", "crash"),))]
    assert plan.events == []


@pytest.mark.parametrize(("overrides", "message"), [
    ({"signups": -1}, "signups must be a whole number from 0 to 100,000"),
    ({"kills": 10**9}, "kills must be a whole number from 0 to 1,000"),
    ({"fault_rate": float("nan")}, "the fault rate must be a number from 0 to 1"),
    ({"fault_rate": 1.5}, "the fault rate must be a number from 0 to 1"),
    ({"signups": "3"}, "signups must be a whole number, not '3'"),
    ({"sagas": 2.0}, "sagas must be a whole number, not 2.0"),
    ({"signups": 0, "sagas": 0}, "nothing to run"),
    ({"hosts": 0, "partitions": 1}, "partitions, group pauses and clock skew happen between "
                                    "hosts: give --hosts N"),
    ({"hosts": 9}, "worker hosts must be a whole number from 0 to 8"),
    ({"hosts": 2, "clock_skew_s": float("nan")}, "the clock skew must be a number from"),
    ({"hosts": 2, "partitions": 1, "partition_s": 0}, "the partition's seconds must be a number"),
    ({"hosts": 2, "signups": 10, "partitions": 1, "partition_s": 60},
     r"a partition of 60 s is longer than the run's load \(3 s\)"),
    ({"hosts": 2, "signups": 10, "group_pauses": 1, "group_pause_s": 120},
     r"a group pause of 120 s is longer than the run's load \(3 s\): give fewer seconds, or "
     r"--seconds 120 or more"),
])
def test_bad_parameters_are_refused_in_one_line(overrides, message):
    with pytest.raises(PlanError, match=message):
        make_plan(params_for(preset=None, seed=1, **overrides))


def test_the_jepsen_preset_cuts_pauses_and_skews_the_lab_s_worker_hosts():
    params = params_for(preset="jepsen", seed=7)
    plan = make_plan(params)
    assert params.hosts >= 3
    assert len(plan.signups) >= 5_000
    assert len(plan.trips) >= 300
    cuts = [e for e in plan.events if e.kind == "partition"]
    assert len(cuts) == params.partitions
    for e in cuts:
        host, peer, way = e.target.split()
        assert host in {"w1", "w2", "w3"}
        assert peer in {"db", "redis", "all"}
        assert way in {"both", "out", "in"}
    assert {e.target for e in plan.events if e.kind == "group_pause"} <= {"w1", "w2", "w3"}
    assert plan.skewed_host in {"w1", "w2", "w3"}
    assert params.clock_skew_s
    assert {"kill", "pg_restart", "pause"} <= {e.kind for e in plan.events}
    assert make_plan(params_for(preset="jepsen", seed=7)) == plan, "the seed decides it all"


def test_an_unknown_preset_is_refused():
    with pytest.raises(PlanError, match="unknown preset 'huge'; use one of: smoke, talk, chaos, "
                                        "jepsen"):
        params_for(preset="huge", seed=1)
    assert set(PRESETS) == {"smoke", "talk", "chaos", "jepsen"}


def test_the_command_refuses_bad_input_before_starting_anything(db):
    from experiments.models import Experiment

    with pytest.raises(CommandError, match="--pg-restarts: PostgreSQL restarts must be a whole "
                                           "number from 0 to 20, not '99'"):
        call_command("experiment", "--signups", "5", "--pg-restarts", "99")
    with pytest.raises(CommandError, match="PostgreSQL restarts must be a whole number"):
        call_command("experiment", signups=5, pg_restarts=99)  # past argparse: Params refuses
    with pytest.raises(CommandError, match="--seed: the seed must be a whole number from 0 to "
                                           "4,294,967,295"):
        call_command("experiment", "--seed", str(2**64))  # was a DataError traceback
    with pytest.raises(CommandError, match="--fault-rate: the fault rate must be a number from 0 "
                                           "to 1, not 'nan'"):
        call_command("experiment", "--fault-rate", "nan")
    with pytest.raises(CommandError, match="--hosts: worker hosts must be a whole number from 0 "
                                           "to 8, not '0.5'"):
        call_command("experiment", "--hosts", "0.5")
    with pytest.raises(CommandError, match="--clock-skew-s: the clock skew must be a number "
                                           "from -86,400 to 86,400, not 'nan'"):
        call_command("experiment", "--hosts", "2", "--clock-skew-s", "nan")
    assert not Experiment.objects.exists()


def test_simulated_hosts_without_root_are_refused_in_one_line(db, monkeypatch):
    from experiments.models import Experiment

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(CommandError, match=r"^2 simulated host\(s\) need root \(network "
                                           r"namespaces, devtools/lab.py\): run it as root, or "
                                           r"without --hosts$"):
        call_command("experiment", "--hosts", "2", "--signups", "5")
    assert not Experiment.objects.exists()


def test_params_round_trip_through_json():
    params = params_for(preset="smoke", seed=9)
    assert Params.from_dict(params.as_dict()) == params


def test_both_styles_run_the_same_trips_with_the_same_faults():
    one = make_plan(params_for(preset=None, seed=7, signups=0, sagas=200, fault_rate=0.3))
    both = make_plan(params_for(preset=None, seed=7, signups=0, sagas=200, fault_rate=0.3,
                                style="both"))
    assert one.params.styles == ("orchestrated",)
    assert both.params.styles == ("orchestrated", "choreographed")
    assert both.trips == one.trips, "the seed decides the trips and their faults, not the style"
    assert any(t.faults for t in both.trips)
    assert both.load_seconds > one.load_seconds, "twice the sagas are spread over longer"
    only = make_plan(params_for(preset=None, seed=7, signups=0, sagas=200, fault_rate=0.3,
                                style="choreographed"))
    assert only.params.styles == ("choreographed",)
    assert only.trips == one.trips


def test_chaos_and_jepsen_run_both_styles_and_the_others_orchestrated():
    assert {name: params_for(preset=name, seed=1).style for name in PRESETS} == {
        "smoke": "orchestrated", "talk": "orchestrated", "chaos": "both", "jepsen": "both"}
    assert params_for(preset="chaos", seed=1, style="choreographed").style == "choreographed"


def test_an_unknown_style_is_refused_in_one_line(db):
    from experiments.models import Experiment

    with pytest.raises(PlanError, match=r"^unknown saga style 'sideways'; use one of: "
                                        r"orchestrated, choreographed, both$"):
        params_for(preset=None, seed=1, style="sideways")
    with pytest.raises(PlanError, match=r"^unknown saga style 3; use one of"):
        Params(style=3)  # type: ignore[arg-type]
    with pytest.raises(CommandError, match=r"^Error: argument --style: invalid choice: "
                                           r"'sideways' \(choose from '?orchestrated'?, "):
        call_command("experiment", "--signups", "5", "--style", "sideways")
    with pytest.raises(CommandError, match=r"^unknown saga style 'sideways'"):
        call_command("experiment", signups=5, style="sideways")  # past argparse: Params
    assert not Experiment.objects.exists()


def test_the_repeat_command_names_the_style_unless_the_preset_does(db):
    from experiments import services
    from experiments.models import Experiment

    custom = Experiment.objects.create(params=params_for(preset=None, seed=1, signups=0,
                                                         sagas=6, style="both").as_dict(),
                                       seed=1)
    assert "--sagas 6 " in services.command_line(custom)
    assert services.command_line(custom).endswith("--style both --seed 1")
    chaos = Experiment.objects.create(preset="chaos", seed=2,
                                      params=params_for(preset="chaos", seed=2).as_dict())
    assert services.command_line(chaos) == "manage.py experiment --preset chaos --seed 2"
    old = Experiment.objects.create(params={"signups": 3, "sagas": 1, "seed": 4}, seed=4)
    assert Params.from_dict(old.params).style == "orchestrated", "runs before --style"
