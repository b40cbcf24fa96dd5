from django import forms

from common.inputs import ValidatedField
from common.validate import integer
from faults.models import Action
from faults.points import POINTS
from faults.services import DEFAULT_DELAY_MS, DELAY_MS, MAX_DELAY_MS, MAX_TIMES, TIMES
from faults.stores import Action as RedisAction


class FaultForm(forms.Form):
    """`manage.py faults arm`'s arguments, parsed by the same rules (faults.services.TIMES,
    DELAY_MS): the same sentence for the same mistake."""

    point = forms.ChoiceField(choices=lambda: [(p, p) for p in sorted(POINTS)])
    action = forms.ChoiceField(choices=[*Action.choices, ("disarm", "disarm")])
    times = ValidatedField(integer, rules=TIMES, required=False, help_text="empty: every time",
                           widget=forms.NumberInput(attrs={"min": 1, "max": MAX_TIMES}))
    ms = ValidatedField(integer, rules=DELAY_MS, initial=DEFAULT_DELAY_MS, required=False,
                        label="delay ms",
                        widget=forms.NumberInput(attrs={"min": 0, "max": MAX_DELAY_MS}))


class RedisForm(forms.Form):
    action = forms.ChoiceField(choices=RedisAction.CHOICES)
