"""Sagas advanced together (sagas.batch), in-process against the real database: the same logs
as one at a time, the commits shared, the flights a few sagas at a time, a saga with faults
armed alone, and one saga's refusal the others' business of none."""

from __future__ import annotations

import pytest
from django.db import connection

from common.db import open_autocommit
from sagas import batch, choreography, coordinator, services
from sagas.batch import SagaError
from sagas.models import Saga, State, Style
from tests.helpers import times_booked
from travel.models import CarBooking, FlightBooking, HotelBooking

pytestmark = pytest.mark.django_db(transaction=True)

HAPPY = ["SAGA_START", "STEP_START hotel", "STEP_END hotel", "STEP_START car", "STEP_END car",
         "STEP_START flight", "STEP_END flight", "SAGA_END"]
CAR_FAILS = ["SAGA_START", "STEP_START hotel", "STEP_END hotel", "STEP_START car",
             "STEP_FAIL car", "SAGA_ABORT", "COMP_START car", "COMP_END car",
             "COMP_START hotel", "COMP_END hotel", "SAGA_END"]


def log_of(saga_id: int) -> list[str]:
    return [f"{e.event} {e.step}".strip()
            for e in Saga.objects.get(pk=saga_id).log.order_by("seq")]


def transactions(table: str, where: str, params: list) -> dict[str, list[int]]:
    """{xmin: the saga ids whose rows of `table` (matching `where`) that transaction wrote}."""
    with connection.cursor() as cur:
        cur.execute(f"SELECT xmin::text, saga_id FROM {table} WHERE {where} ORDER BY saga_id",
                    params)
        found: dict[str, list[int]] = {}
        for xmin, saga_id in cur.fetchall():
            found.setdefault(xmin, []).append(saga_id)
    return found


def test_a_batch_ends_like_sagas_one_at_a_time_with_its_commits_shared(settings):
    settings.SAGA_IN_DOUBT_MAX = 3
    ids = [services.start_trip(customer=f"c{i}").pk for i in range(10)]
    assert coordinator.advance_many(saga_ids=ids) == [State.COMPLETED] * 10
    for saga_id in ids:
        assert log_of(saga_id) == HAPPY
        assert times_booked(saga_id) == {"hotel": 1, "car": 1, "flight": 1}
    # every hotel's STEP_START in one commit, and every hotel booked in one statement
    hotel_starts = transactions("sagas_sagalog", "event = 'STEP_START' AND step = 'hotel'", [])
    assert list(hotel_starts.values()) == [ids]
    assert list(transactions(HotelBooking._meta.db_table, "true", []).values()) == [ids]
    assert list(transactions(CarBooking._meta.db_table, "true", []).values()) == [ids]
    # the flights, which must not run twice: three sagas at a time, each group's STEP_START
    # committed before its flights were booked
    flight_starts = transactions("sagas_sagalog", "event = 'STEP_START' AND step = 'flight'",
                                 [])
    assert sorted(len(group) for group in flight_starts.values()) == [1, 3, 3, 3]
    flights = transactions(FlightBooking._meta.db_table, "true", [])
    assert sorted(map(sorted, flights.values())) == sorted(map(sorted, flight_starts.values()))


def test_a_saga_with_faults_armed_runs_alone_after_the_others():
    plain = [services.start_trip(customer=f"c{i}").pk for i in range(3)]
    bob = services.start_trip(customer="bob", fail="car").pk
    assert coordinator.advance_many(saga_ids=[bob, *plain]) == \
        [State.COMPENSATED] + [State.COMPLETED] * 3
    assert log_of(bob) == CAR_FAILS
    for saga_id in plain:
        assert log_of(saga_id) == HAPPY
    hotel_starts = transactions("sagas_sagalog", "event = 'STEP_START' AND step = 'hotel'", [])
    assert sorted(hotel_starts.values()) == [plain, [bob]]


def test_a_saga_taken_over_mid_batch_is_refused_and_the_others_go_on(monkeypatch):
    ids = [services.start_trip(customer=f"c{i}").pk for i in range(4)]
    taken = ids[1]
    call_steps = coordinator.call_steps

    def recovery_takes_one_over(*args, **kwargs):
        Saga.objects.filter(pk=taken).update(epoch=99)  # as recover_sagas' coordinator would
        return call_steps(*args, **kwargs)

    monkeypatch.setattr(coordinator, "call_steps", recovery_takes_one_over)
    outcomes = coordinator.advance_many(saga_ids=ids)
    refused = outcomes.pop(1)
    assert isinstance(refused, SagaError)
    assert "was taken over" in str(refused)
    assert outcomes == [State.COMPLETED] * 3
    assert log_of(taken) == HAPPY[:2], "nothing written after it was taken over"


def test_ids_that_are_not_sagas_or_are_held_elsewhere_get_their_own_answer():
    saga = services.start_trip(customer="ann")
    held = services.start_trip(customer="ben")
    with open_autocommit("another coordinator") as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [batch.LOCK_CLASS, held.pk])
        outcomes = coordinator.advance_many(saga_ids=[saga.pk, 10**9, held.pk])
    assert outcomes[0] == State.COMPLETED
    assert isinstance(outcomes[1], Saga.DoesNotExist)
    assert outcomes[2] is None
    assert log_of(held.pk) == ["SAGA_START"]


def test_reactions_to_one_saga_in_one_batch_run_one_after_the_other():
    saga = services.start_trip(customer="cho", style=Style.CHOREOGRAPHED)
    said = choreography.react_many(calls=[{"saga_id": saga.pk, "service": "hotel"},
                                          {"saga_id": saga.pk, "service": "hotel"}])
    assert said[0] == "hotel: STEP_START hotel, STEP_END hotel; published hotel.booked for car"
    assert said[1] == f"nothing to do for hotel: it is car's turn (saga {saga.pk})"
    assert log_of(saga.pk) == HAPPY[:3]
