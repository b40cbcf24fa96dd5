from django.contrib import admin
from django.http import HttpRequest

from travel.models import CarBooking, FlightBooking, HotelBooking


class BookingAdmin(admin.ModelAdmin):
    list_display = ["saga_id", "step", "status", "times_booked", "booked_at", "cancelled_at"]
    list_filter = ["status"]
    search_fields = ["saga_id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


for model in (HotelBooking, CarBooking, FlightBooking):
    admin.site.register(model, BookingAdmin)
