from django import forms

from faults.models import Action
from faults.points import POINTS
from faults.services import MAX_DELAY_MS, MAX_TIMES
from faults.stores import Action as RedisAction


class FaultForm(forms.Form):
    point = forms.ChoiceField(choices=lambda: [(p, p) for p in sorted(POINTS)])
    action = forms.ChoiceField(choices=[*Action.choices, ("disarm", "disarm")])
    times = forms.IntegerField(min_value=1, max_value=MAX_TIMES, required=False,
                               help_text="empty: every time")
    ms = forms.IntegerField(min_value=0, max_value=MAX_DELAY_MS, initial=2000, required=False,
                            label="delay ms")


class RedisForm(forms.Form):
    action = forms.ChoiceField(choices=RedisAction.CHOICES)
