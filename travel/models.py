"""Three small "services" the trip saga calls, each with its own table.

A booking is keyed by (saga, step). Cancelling a key that was never booked leaves a cancelled
row behind (a tombstone), so a booking that arrives after its cancellation is refused: the
compensation wins whatever order the two happen in.
"""

from __future__ import annotations

from django.db import models


class Status(models.TextChoices):
    BOOKED = "booked"
    CANCELLED = "cancelled"


class BookingQuerySet(models.QuerySet):
    def booked(self) -> BookingQuerySet:
        return self.filter(status=Status.BOOKED)


class Booking(models.Model):
    saga_id = models.BigIntegerField()
    step = models.CharField(max_length=50)
    status = models.CharField(max_length=10, choices=Status.choices)
    # How many times the service really did the work. Hotel and car book idempotently (stays 1);
    # the flight service issues a new ticket on every call, which is why it must never be
    # called twice for one saga step.
    times_booked = models.PositiveIntegerField(default=0)
    booked_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    objects = BookingQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["-saga_id"]

    def __str__(self) -> str:
        return f"saga {self.saga_id} {self.step}: {self.status}"


class HotelBooking(Booking):
    class Meta(Booking.Meta):
        constraints = [models.UniqueConstraint(fields=["saga_id", "step"], name="hotel_key")]


class CarBooking(Booking):
    class Meta(Booking.Meta):
        constraints = [models.UniqueConstraint(fields=["saga_id", "step"], name="car_key")]


class FlightBooking(Booking):
    class Meta(Booking.Meta):
        constraints = [models.UniqueConstraint(fields=["saga_id", "step"], name="flight_key")]
