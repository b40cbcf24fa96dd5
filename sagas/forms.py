from django import forms

from sagas.definitions import TRIP

SERVICE_CHOICES = [("", "none"), *[(s.name, s.name) for s in TRIP.steps]]


class StartTripForm(forms.Form):
    customer = forms.CharField(max_length=100, initial="alice")
    fail = forms.ChoiceField(choices=SERVICE_CHOICES, required=False,
                             label="Failing service", help_text="its booking raises, once")
    crash = forms.ChoiceField(choices=SERVICE_CHOICES, required=False,
                              label="Crashing service",
                              help_text="the coordinator dies right after it booked, once")
