from django.contrib import admin

from common.admin import ReadOnlyAdminMixin
from travel.models import CarBooking, FlightBooking, HotelBooking


class BookingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["saga_id", "step", "status", "times_booked", "booked_at", "cancelled_at"]
    list_filter = ["status"]
    search_fields = ["saga_id"]


for model in (HotelBooking, CarBooking, FlightBooking):
    admin.site.register(model, BookingAdmin)
