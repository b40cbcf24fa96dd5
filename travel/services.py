"""book/cancel for each travel service, keyed by (saga, step)."""

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from faults.services import fire, scoped
from travel.models import Booking, CarBooking, FlightBooking, HotelBooking, Status

MODELS: dict[str, type[HotelBooking] | type[CarBooking] | type[FlightBooking]] = {
    "hotel": HotelBooking,
    "car": CarBooking,
    "flight": FlightBooking,
}
# Hotel and car bookings are idempotent by key; the flight service books again on every call.
IDEMPOTENT = {"hotel": True, "car": True, "flight": False}

ALREADY_CANCELLED = "{service} booking for saga {saga_id} was cancelled: refusing to book it"


class BookingRefused(Exception):
    """The service said no (a business failure)."""


FIRST_BOOKING = """
INSERT INTO {table} (saga_id, step, status, times_booked, booked_at)
VALUES (%s, %s, %s, 1, %s)
ON CONFLICT (saga_id, step) DO NOTHING
RETURNING id
"""


def book(*, service: str, saga_id: int, step: str) -> Booking:
    """Book; the fault point fires after the booking committed (the answer may still be lost).

    The first booking of a key is one statement; a key seen before (a retry, a cancellation's
    tombstone) takes the locked path below."""
    model = MODELS[service]
    now = timezone.now()
    with connection.cursor() as cur:
        cur.execute(FIRST_BOOKING.format(table=model._meta.db_table),
                    [saga_id, step, Status.BOOKED, now])
        first = cur.fetchone()
    if first is not None:
        fire(f"saga.{service}.book")
        return model(pk=first[0], saga_id=saga_id, step=step, status=Status.BOOKED,
                     times_booked=1, booked_at=now)
    with transaction.atomic():
        row, created = model.objects.select_for_update().get_or_create(
            saga_id=saga_id, step=step,
            defaults={"status": Status.BOOKED, "times_booked": 1, "booked_at": timezone.now()},
        )
        if not created:
            if row.status == Status.CANCELLED:
                raise BookingRefused(ALREADY_CANCELLED.format(service=service, saga_id=saga_id))
            if not IDEMPOTENT[service]:
                row.times_booked += 1
                row.booked_at = timezone.now()
                row.save(update_fields=["times_booked", "booked_at"])
    fire(f"saga.{service}.book")
    return row


FIRST_BOOKINGS = """
INSERT INTO {table} (saga_id, step, status, times_booked, booked_at)
SELECT saga_id, %s, %s, 1, %s FROM unnest(%s::bigint[]) AS saga_id
ON CONFLICT (saga_id, step) DO NOTHING
RETURNING saga_id
"""


def book_many(*, service: str, saga_ids: list[int], step: str,
              scopes: dict[int, str]) -> dict[int, Exception | None]:
    """book() for one step of several sagas: every first booking of its key in one statement,
    a key seen before by book()'s locked path. Each saga's fault point fires after its booking
    committed, with the faults armed for it (`scopes`: saga id -> fault scope). Returns each
    saga's error, None where it is booked."""
    model = MODELS[service]
    with connection.cursor() as cur:
        cur.execute(FIRST_BOOKINGS.format(table=model._meta.db_table),
                    [step, Status.BOOKED, timezone.now(), saga_ids])
        first = {row[0] for row in cur.fetchall()}
    errors: dict[int, Exception | None] = {}
    for saga_id in saga_ids:
        try:
            with scoped(scopes.get(saga_id)):
                if saga_id in first:
                    fire(f"saga.{service}.book")
                else:
                    book(service=service, saga_id=saga_id, step=step)
        except Exception as e:
            errors[saga_id] = e
        else:
            errors[saga_id] = None
    return errors


def cancel(*, service: str, saga_id: int, step: str) -> Booking:
    """Cancel (idempotent); one fault point fires before anything is cancelled, one after the
    cancellation committed."""
    fire(f"saga.{service}.cancel")
    model = MODELS[service]
    with transaction.atomic():
        row, created = model.objects.select_for_update().get_or_create(
            saga_id=saga_id, step=step,
            defaults={"status": Status.CANCELLED, "cancelled_at": timezone.now()},
        )
        if not created and row.status != Status.CANCELLED:
            row.status = Status.CANCELLED
            row.cancelled_at = timezone.now()
            row.save(update_fields=["status", "cancelled_at"])
    fire(f"saga.{service}.cancelled")
    return row


def booking_states(*, saga_id: int) -> dict[str, str]:
    """{"hotel": "booked"|"cancelled"|"none", ...} for one saga."""
    states = {}
    for service, model in MODELS.items():
        row = model.objects.filter(saga_id=saga_id).first()
        states[service] = row.status if row else "none"
    return states
