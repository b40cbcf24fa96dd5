from django import forms

from faults.models import Action
from faults.points import POINTS
from faults.services import MAX_DELAY_MS, MAX_TIMES
from faults.stores import Action as RedisAction
from sagas.forms import SERVICE_CHOICES
from users.models import Mode

SIGNUP_FAULTS = [
    ("", "no fault"),
    ("fail:part1", "part 1: raise"),
    ("crash:part1", "part 1: crash"),
    ("fail:part2", "part 2: raise"),
    ("crash:part2", "part 2: crash"),
]


class SignupForm(forms.Form):
    name = forms.CharField(max_length=150)
    mode = forms.ChoiceField(choices=Mode.choices)
    fault = forms.ChoiceField(choices=SIGNUP_FAULTS, required=False)


class FaultForm(forms.Form):
    point = forms.ChoiceField(choices=[(p, p) for p in POINTS])
    action = forms.ChoiceField(choices=[*Action.choices, ("disarm", "disarm")])
    times = forms.IntegerField(min_value=1, max_value=MAX_TIMES, required=False,
                               help_text="empty: every time")
    ms = forms.IntegerField(min_value=0, max_value=MAX_DELAY_MS, initial=2000, required=False,
                            label="delay ms")


class TripForm(forms.Form):
    customer = forms.CharField(max_length=100)
    fail = forms.ChoiceField(choices=SERVICE_CHOICES, required=False, label="failing")
    crash = forms.ChoiceField(choices=SERVICE_CHOICES, required=False, label="crashing")


class RedisForm(forms.Form):
    action = forms.ChoiceField(choices=RedisAction.CHOICES)
