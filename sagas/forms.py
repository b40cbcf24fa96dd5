from django import forms

from common.inputs import ValidatedField
from common.validate import text
from sagas.definitions import TRIP
from sagas.models import Style
from sagas.services import CUSTOMER, CUSTOMER_MAX

SERVICE_CHOICES = [("", "none"), *[(s.name, s.name) for s in TRIP.steps]]


class StartTripForm(forms.Form):
    """What `manage.py book_trip` takes, parsed the same way: the same sentence for the same
    mistake (and start_trip() refuses the fault combinations, for both)."""

    customer = ValidatedField(text, rules=CUSTOMER, initial="alice",
                              widget=forms.TextInput(attrs={"maxlength": CUSTOMER_MAX}))
    fail = forms.ChoiceField(choices=SERVICE_CHOICES, required=False,
                             label="Failing service", help_text="its booking raises, once")
    crash = forms.ChoiceField(choices=SERVICE_CHOICES, required=False,
                              label="Crashing service",
                              help_text="the process booking it (the coordinator, or the "
                                        "service's reaction) dies right after it booked, once")
    style = forms.ChoiceField(choices=Style.choices, initial=Style.ORCHESTRATED, required=False,
                              label="Style", help_text="who drives the saga (the relay carries "
                                                       "a choreographed saga's events)")
