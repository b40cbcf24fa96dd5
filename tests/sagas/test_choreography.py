"""The choreographed trip (sagas.choreography): the talk's four scenarios on a real cluster and
relay, with the orchestrated saga's exact logs; and a service's reaction in-process."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from faults import services as faults
from outbox.models import OutboxMessage
from sagas import choreography, services
from sagas.definitions import TRIP
from sagas.models import Saga, SagaLog, State, Style
from tests.helpers import Process, times_booked, wait_until
from travel.services import booking_states

BOOKED = {"hotel": "booked", "car": "booked", "flight": "booked"}
CANCELLED = {"hotel": "cancelled", "car": "cancelled", "flight": "cancelled"}
HAPPY = ["SAGA_START", "STEP_START hotel", "STEP_END hotel", "STEP_START car", "STEP_END car",
         "STEP_START flight", "STEP_END flight", "SAGA_END"]
SCENARIOS = {
    "all booked": ({}, State.COMPLETED, HAPPY, BOOKED),
    "car fails": ({"fail": "car"}, State.COMPENSATED,
                  ["SAGA_START", "STEP_START hotel", "STEP_END hotel", "STEP_START car",
                   "STEP_FAIL car", "SAGA_ABORT", "COMP_START car", "COMP_END car",
                   "COMP_START hotel", "COMP_END hotel", "SAGA_END"],
                  {"hotel": "cancelled", "car": "cancelled", "flight": "none"}),
    "crash after the hotel": ({"crash": "hotel"}, State.COMPLETED,
                              ["SAGA_START", "STEP_START hotel", "STEP_START hotel",
                               "STEP_END hotel", *HAPPY[3:]], BOOKED),
    "crash after the flight": ({"crash": "flight"}, State.COMPENSATED,
                               [*HAPPY[:6], "SAGA_ABORT", "COMP_START flight",
                                "COMP_END flight", "COMP_START car", "COMP_END car",
                                "COMP_START hotel", "COMP_END hotel", "SAGA_END"], CANCELLED),
}


def log_of(saga: Saga) -> list[str]:
    return [f"{e.event} {e.step}".strip() for e in saga.log.order_by("seq")]


@pytest.fixture(scope="module")
def outcomes(django_db_setup, django_db_blocker, tmp_path_factory):
    """Every scenario started at once, run by a real qcluster and relay to its end."""
    log_dir = tmp_path_factory.mktemp("choreography")
    with django_db_blocker.unblock():
        started = []
        try:
            cluster = Process("qcluster", log_dir=log_dir, name="qcluster")
            started.append(cluster)
            relay = Process("relay_outbox", "--follow", log_dir=log_dir, name="relay")
            started.append(relay)
            cluster.wait_for_log("running.")
            sagas = {name: services.start_trip(customer=name, style=Style.CHOREOGRAPHED,
                                               **kwargs)
                     for name, (kwargs, *_) in SCENARIOS.items()}
            ids = [s.pk for s in sagas.values()]
            wait_until(lambda: not Saga.objects.filter(pk__in=ids).active().exists(),
                       timeout=60, interval=0.2,
                       message=lambda: "every saga to end:\n" + cluster.log()[-3000:])
            return {name: {"saga": Saga.objects.get(pk=s.pk), "log": log_of(s),
                           "entries": list(SagaLog.objects.filter(saga=s).order_by("seq")),
                           "bookings": booking_states(saga_id=s.pk),
                           "times": times_booked(s.pk),
                           "events": list(OutboxMessage.objects.filter(
                               payload__saga_id=s.pk).order_by("created_at")
                               .values_list("topic", flat=True))}
                    for name, s in sagas.items()}
        finally:
            for proc in reversed(started):
                proc.stop()
            faults.disarm_all()
            call_command("flush", interactive=False, verbosity=0)


@pytest.mark.cluster
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_talks_scenarios_choreographed_give_the_orchestrated_logs(outcomes, scenario):
    _, state, log, bookings = SCENARIOS[scenario]
    out = outcomes[scenario]
    assert out["saga"].style == Style.CHOREOGRAPHED
    assert out["saga"].state == state
    assert out["log"] == log
    assert out["bookings"] == bookings
    assert all(n == 1 for n in out["times"].values()), "no flight booked twice"


@pytest.mark.cluster
def test_each_service_reacts_to_the_event_before_it(outcomes):
    assert outcomes["all booked"]["events"] == ["trip.requested", "hotel.booked", "car.booked"]
    assert outcomes["car fails"]["events"] == ["trip.requested", "hotel.booked",
                                               "car.cancelled"]
    assert outcomes["crash after the flight"]["events"] == [
        "trip.requested", "hotel.booked", "car.booked", "flight.cancelled", "car.cancelled"]


@pytest.mark.cluster
def test_a_reaction_that_died_mid_step_is_recovered_forward_or_backward(outcomes):
    hotel = outcomes["crash after the hotel"]["entries"]
    rerun = [e for e in hotel if e.event == "STEP_START" and e.step == "hotel"][1]
    assert rerun.detail.startswith("forward recovery")
    assert rerun.pid != hotel[1].pid, "run again by another worker: the first one died"
    flight = outcomes["crash after the flight"]["entries"]
    abort = next(e for e in flight if e.event == "SAGA_ABORT")
    assert "not idempotent: backward recovery" in abort.detail


# --- in-process ---------------------------------------------------------------------------


def deliver(saga: Saga, *, handled: set[int] | None = None) -> list[str]:
    """Run, in this process, the reaction to each event of the saga not handled yet, until
    none is left (what the relay and a cluster do; the messages are left as they are);
    returns what each reaction said."""
    handled = set() if handled is None else handled
    subscriber = {s.topic: s.service for s in choreography.subscriptions(TRIP)}
    said: list[str] = []
    while True:
        pending = list(OutboxMessage.objects.filter(payload__saga_id=saga.pk)
                       .exclude(pk__in=handled).order_by("id"))
        if not pending:
            return said
        for message in pending:
            handled.add(message.pk)
            said.append(choreography.react(saga_id=saga.pk, service=subscriber[message.topic]))


@pytest.mark.django_db(transaction=True)
def test_an_event_delivered_twice_is_handled_once():
    saga = services.start_trip(customer="dup", style=Style.CHOREOGRAPHED)
    first = choreography.react(saga_id=saga.pk, service="hotel")
    assert first == "hotel: STEP_START hotel, STEP_END hotel; published hotel.booked for car"

    again = choreography.react(saga_id=saga.pk, service="hotel")

    assert again == f"nothing to do for hotel: it is car's turn (saga {saga.pk})"
    assert log_of(saga) == HAPPY[:3]
    deliver(saga)  # trip.requested (again: nothing to do), then the rest
    saga.refresh_from_db()
    assert saga.state == State.COMPLETED
    assert log_of(saga) == HAPPY


@pytest.mark.django_db(transaction=True)
def test_the_reaction_and_its_event_commit_together():
    saga = services.start_trip(customer="tx", style=Style.CHOREOGRAPHED)
    deliver(saga)
    with connection.cursor() as cur:
        cur.execute("SELECT xmin::text, event, step FROM sagas_sagalog WHERE saga_id = %s "
                    "ORDER BY seq", [saga.pk])
        log_tx = {f"{e} {s}".strip(): x for x, e, s in cur.fetchall()}
        cur.execute("SELECT xmin::text, topic FROM outbox_outboxmessage "
                    "WHERE (payload->>'saga_id')::bigint = %s", [saga.pk])
        event_tx = {t: x for x, t in cur.fetchall()}
    assert event_tx["trip.requested"] == log_tx["SAGA_START"]
    assert event_tx["hotel.booked"] == log_tx["STEP_END hotel"]
    assert event_tx["car.booked"] == log_tx["STEP_END car"]
    assert log_tx["STEP_START hotel"] != log_tx["STEP_END hotel"], "Ti's start commits first"


@pytest.mark.django_db(transaction=True)
def test_a_cancellation_that_fails_is_run_again_by_the_queue_until_it_succeeds():
    faults.arm(point="saga.hotel.cancel", action="raise", times=1)
    saga = services.start_trip(customer="c", style=Style.CHOREOGRAPHED, fail="car")
    with pytest.raises(choreography.Retry, match="cancelling hotel"):
        deliver(saga)
    saga.refresh_from_db()
    assert saga.state == State.COMPENSATING
    said = choreography.react(saga_id=saga.pk, service="hotel")  # the queue's next try
    saga.refresh_from_db()
    assert saga.state == State.COMPENSATED, said
    assert log_of(saga)[-5:] == ["COMP_START hotel", "COMP_FAIL hotel", "COMP_START hotel",
                                 "COMP_END hotel", "SAGA_END"]


@pytest.mark.django_db(transaction=True)
def test_choreographed_sagas_are_not_recovered_by_lease():
    with override_settings(SAGA_LEASE_SECONDS=0.1):
        saga = services.start_trip(customer="l", style=Style.CHOREOGRAPHED)
    assert not Saga.objects.due().filter(pk=saga.pk).exists()


def test_a_style_that_does_not_exist_is_refused_in_one_line(db):
    with pytest.raises(services.SagaError, match="unknown saga style 'sideways'; use one of: "
                       "orchestrated, choreographed"):
        services.start_trip(customer="x", style="sideways")
    assert not Saga.objects.exists()


def test_book_trip_says_what_a_choreographed_trip_will_go_through():
    said = services.expect(crash="flight", style=Style.CHOREOGRAPHED)
    assert said.startswith("the flight service's reaction dies right after the flight is booked")
    assert "coordinator" not in said
    assert "recover_sagas" not in said
    assert "the relay carries them" in services.expect(style=Style.CHOREOGRAPHED)
