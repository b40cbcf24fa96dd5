from django import forms

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
