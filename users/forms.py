from django import forms

from common.inputs import ValidatedField
from users.models import Mode
from users.services import NAME_MAX, parse_name

SIGNUP_FAULTS = [
    ("", "no fault"),
    ("fail:part1", "part 1: raise"),
    ("crash:part1", "part 1: crash"),
    ("fail:part2", "part 2: raise"),
    ("crash:part2", "part 2: crash"),
]


class SignupForm(forms.Form):
    """What `manage.py create_user` takes, parsed by the same function: the same sentence for
    the same mistake."""

    name = ValidatedField(parse_name, widget=forms.TextInput(attrs={"maxlength": NAME_MAX}))
    mode = forms.ChoiceField(choices=Mode.choices)
    fault = forms.ChoiceField(choices=SIGNUP_FAULTS, required=False)
