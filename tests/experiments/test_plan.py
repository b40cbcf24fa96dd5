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
])
def test_bad_parameters_are_refused_in_one_line(overrides, message):
    with pytest.raises(PlanError, match=message):
        params_for(preset=None, seed=1, **overrides)


def test_an_unknown_preset_is_refused():
    with pytest.raises(PlanError, match="unknown preset 'huge'; use one of: smoke, talk, chaos"):
        params_for(preset="huge", seed=1)
    assert set(PRESETS) == {"smoke", "talk", "chaos"}


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
    assert not Experiment.objects.exists()


def test_params_round_trip_through_json():
    params = params_for(preset="smoke", seed=9)
    assert Params.from_dict(params.as_dict()) == params
