from django import forms

from experiments.plan import MAX_EVENTS, MAX_SAGAS, MAX_SIGNUPS, PRESETS


class StartForm(forms.Form):
    """The command's options; empty ones take the preset's value."""

    preset = forms.ChoiceField(choices=[("", "custom"), *[(p, p) for p in PRESETS]],
                               required=False, initial="talk")
    seed = forms.IntegerField(required=False, min_value=0, max_value=2**31 - 1,
                              help_text="empty: random")
    signups = forms.IntegerField(required=False, min_value=0, max_value=MAX_SIGNUPS,
                                 help_text="per mode")
    sagas = forms.IntegerField(required=False, min_value=0, max_value=MAX_SAGAS)
    kills = forms.IntegerField(required=False, min_value=0, max_value=MAX_EVENTS)
    pg_restarts = forms.IntegerField(required=False, min_value=0, max_value=20,
                                     label="PostgreSQL restarts")
    redis_restarts = forms.IntegerField(required=False, min_value=0, max_value=20,
                                        label="Redis restarts")
    fault_rate = forms.FloatField(required=False, min_value=0, max_value=1,
                                  help_text="0 to 1: share of signups and sagas with a fault")
