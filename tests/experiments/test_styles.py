"""Orchestrated beside choreographed (experiments.styles): what each style's sagas cost in
messages and commits, counted from the database as the run left it; each style held to the
targets on its own; and a whole run of the talk's trips in both styles."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from django.core.management import call_command

from experiments import styles
from experiments.checks import check_history
from experiments.models import Experiment, Status
from experiments.plan import make_plan, params_for
from outbox.models import OutboxMessage
from outbox.services import relay_outbox
from sagas import choreography, coordinator, services
from sagas.definitions import TRIP
from sagas.models import Saga, State, Style


def choreograph(saga: Saga) -> None:
    """What the relay and a cluster do, in this process: relay the saga's pending events
    (one relay transaction each time), then run the reaction each is for, until none is
    left."""
    subscriber = {s.topic: s.service for s in choreography.subscriptions(TRIP)}
    handled: set = set()
    while True:
        relay_outbox()
        pending = list(OutboxMessage.objects.filter(payload__saga_id=saga.pk)
                       .exclude(pk__in=handled).order_by("created_at"))
        if not pending:
            return
        for message in pending:
            handled.add(message.pk)
            choreography.react(saga_id=saga.pk, service=subscriber[message.topic])


@pytest.mark.django_db(transaction=True)
def test_a_trip_commits_8_times_orchestrated_and_13_times_choreographed():
    orchestrated = services.start_trip(customer="o")
    assert coordinator.advance(saga_id=orchestrated.pk) == State.COMPLETED
    choreographed = services.start_trip(customer="c", style=Style.CHOREOGRAPHED)
    choreograph(choreographed)
    assert Saga.objects.get(pk=choreographed.pk).state == State.COMPLETED

    commits = styles.commits_per_saga()
    # the request (SAGA_START with its job); STEP_START hotel; the three bookings; each
    # STEP_END with what follows it (STEP_START car, STEP_START flight, SAGA_END)
    assert commits[orchestrated.pk] == 1 + 1 + 3 + 3 == 8
    # the request (SAGA_START with trip.requested); per service: STEP_START, the booking,
    # STEP_END with its event (the last with SAGA_END); the relay's commit of each event
    assert commits[choreographed.pk] == 1 + 3 * 3 + 3 == 13
    messages = styles.messages_per_saga()
    assert messages[choreographed.pk] == 3  # trip.requested, hotel.booked, car.booked
    # in this process no cluster ran the coordinator's job: no result row, no message yet
    assert orchestrated.pk not in messages


@pytest.mark.django_db(transaction=True)
def test_commits_are_a_lower_bound_an_updated_row_shows_its_last_writer_only():
    saga = services.start_trip(customer="bob", fail="car")
    assert coordinator.advance(saga_id=saga.pk) == State.COMPENSATED
    # 10 transactions wrote: the request; STEP_START hotel; the hotel booked; STEP_END hotel
    # with STEP_START car; the car booked (then the fault); STEP_FAIL car with SAGA_ABORT and
    # COMP_START car; the car cancelled; COMP_END car with COMP_START hotel; the hotel
    # cancelled; COMP_END hotel with SAGA_END. The two bookings were updated by their
    # cancellations, which hide the commits that booked them.
    assert styles.commits_per_saga()[saga.pk] == 10 - 2


def test_percentiles_are_by_nearest_rank():
    values = [0.5, 0.1, 0.3, 0.2, 0.4]
    assert styles.percentile(values, 0.5) == 0.3
    assert styles.percentile(values, 0.99) == 0.5
    assert styles.percentile(list(range(1, 201)), 0.99) == 198
    assert styles.percentile([], 0.5) is None


def test_each_style_is_held_to_the_targets_on_its_own(db, tmp_path):
    """A choreographed saga left half way (its events never delivered) fails the run, and
    the reason names its style; the orchestrated ones, ended, are fine."""
    done = services.start_trip(customer="o")
    Saga.objects.filter(pk=done.pk).update(state=State.COMPENSATED)  # nothing booked
    services.start_trip(customer="c", style=Style.CHOREOGRAPHED)
    plan = make_plan(params_for(preset=None, seed=1, signups=0, sagas=1, style="both"))
    result = check_history(plan=plan, mail_dir=tmp_path, samples=[], timeline=[],
                           faults=Counter(), restarts={}, quiesced_after=1.0, stall_limit=5)
    by_style = result["sagas_by_style"]
    assert list(by_style) == ["orchestrated", "choreographed"]
    assert by_style["orchestrated"]["half_done"] == 0
    assert by_style["choreographed"]["half_done"] == 1
    assert by_style["choreographed"]["outcome_p50_s"] is None, "it never ended"
    assert by_style["orchestrated"]["outcome_p50_s"] is None, "no SAGA_END: not timed"
    assert result["why_not"] == ["choreographed: 1 saga(s) half done"]
    assert result["passed"] is False


@pytest.mark.experiment
@pytest.mark.beside_conformance  # mostly waits: make test's second pass
def test_the_talks_trips_in_both_styles_end_alike_and_choreography_sends_more(
        transactional_db, capsys):
    """alice (all booked), bob (the car fails), carol (the process booking dies after the
    hotel), dave (... after the flight), each orchestrated and choreographed, on real
    processes."""
    call_command("experiment", "--preset", "talk", "--style", "both", "--seed", "3", "--json")
    result = json.loads(capsys.readouterr().out)
    assert result["passed"], result["why_not"]
    by_style = result["sagas_by_style"]
    assert list(by_style) == ["orchestrated", "choreographed"]
    for style in by_style.values():
        assert (style["started"], style["completed"], style["compensated"]) == (4, 2, 2)
        assert style["half_done"] == style["flights_booked_twice"] == style["stuck"] == 0
        assert 0 < style["outcome_p50_s"] <= style["outcome_p99_s"]
    # one coordinator job per saga, carol's run twice (its worker died) but one job
    assert by_style["orchestrated"]["messages"] == 4
    # alice, bob and carol 3 events each; dave 5: requested, hotel.booked, car.booked,
    # flight.cancelled, car.cancelled
    assert by_style["choreographed"]["messages"] == 3 + 3 + 3 + 5
    assert by_style["orchestrated"]["commits_per_saga"] >= 8
    assert by_style["choreographed"]["commits_per_saga"] > \
        by_style["orchestrated"]["commits_per_saga"]
    assert result["faults"]["saga_faults"] == 2 * 3, "bob, carol and dave, in each style"
    run = Experiment.objects.get()
    assert run.status == Status.DONE
    assert run.params["style"] == "both"
