from django import forms

from common.inputs import ValidatedField
from experiments.plan import BOTH, PRESETS, RULES, STYLES


def parameter(name: str, **kwargs) -> ValidatedField:
    """The command's option `--NAME`, parsed by the same rule (experiments.plan.RULES): the
    form says what the command says."""
    parser, rules = RULES[name]
    attrs = {"min": rules["low"], "max": rules["high"]}
    if parser is not RULES["seed"][0]:  # a number, not a whole one
        attrs["step"] = "any"
    return ValidatedField(parser, rules=rules, required=False,
                          widget=forms.NumberInput(attrs=attrs), **kwargs)


class StartForm(forms.Form):
    """The command's options; empty ones take the preset's value."""

    preset = forms.ChoiceField(choices=[("", "custom"), *[(p, p) for p in PRESETS]],
                               required=False, initial="talk")
    seed = parameter("seed", help_text="empty: random")
    signups = parameter("signups", help_text="per mode")
    sagas = parameter("sagas")
    style = forms.ChoiceField(
        choices=[("", "the preset's"), *[(s, s) for s in STYLES]], required=False,
        label="saga style",
        help_text=f"{BOTH}: every trip orchestrated and choreographed, with the same faults, "
                  "side by side")
    kills = parameter("kills")
    pg_restarts = parameter("pg_restarts", label="PostgreSQL restarts")
    redis_restarts = parameter("redis_restarts", label="Redis restarts")
    fault_rate = parameter("fault_rate",
                           help_text="0 to 1: share of signups and sagas with a fault")
    seconds = parameter("seconds", label="run seconds",
                        help_text="spread the load over at least this long")
    hosts = parameter("hosts", label="worker hosts",
                      help_text="simulated hosts over TCP (the lab, needs root); 0: this machine")
    partitions = parameter("partitions", help_text="a worker host cut off (hosts only)")
    partition_s = parameter("partition_s", label="partition seconds")
    group_pauses = parameter("group_pauses", help_text="SIGSTOP of a host's whole cluster")
    group_pause_s = parameter("group_pause_s", label="group pause seconds")
    clock_skew_s = parameter("clock_skew_s", label="clock skew seconds",
                             help_text="one worker host's wall clock shifted")

    def clean_style(self) -> str | None:
        return self.cleaned_data["style"] or None  # empty: the preset's (or orchestrated)
