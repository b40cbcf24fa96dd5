"""`manage.py check` for the metrics' settings: METRICS_ROW_COUNTS names models and choice
fields that exist (a typo would otherwise show only as a failed source at scrape time)."""

from __future__ import annotations

import re

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import FieldDoesNotExist

E020 = "reliable.E020"
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def row_count_problems(counts: object) -> list[str]:
    """What is wrong with a METRICS_ROW_COUNTS value, one line each."""
    if not isinstance(counts, dict):
        return ["must be a dict: metric name -> (\"app.Model\", [choice fields])"]
    problems = []
    for name, spec in counts.items():
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            problems.append(f"{name!r} is not a Prometheus metric name")
            continue
        try:
            model, fields = spec
            Model = apps.get_model(model)
        except (TypeError, ValueError, LookupError) as e:
            problems.append(f"{name}: {spec!r} does not name a model ({e})")
            continue
        if not fields or isinstance(fields, str):
            problems.append(f"{name}: give a list of fields, not {fields!r}")
            continue
        for field in fields:
            try:
                choices = Model._meta.get_field(field).choices
            except FieldDoesNotExist:
                problems.append(f"{name}: {model} has no field {field!r}")
                continue
            if not choices:
                problems.append(f"{name}: {model}.{field} has no choices (the labels would be "
                                "unbounded)")
    return problems


@register(Tags.compatibility)
def check_metrics_settings(app_configs=None, **kwargs) -> list:
    return [Error(f"METRICS_ROW_COUNTS: {p}", id=E020)
            for p in row_count_problems(getattr(settings, "METRICS_ROW_COUNTS", {}))]
