from django.db.models import QuerySet

from faults.models import Fault


def global_faults() -> QuerySet[Fault]:
    return Fault.objects.filter(scope="").order_by("point")


def armed_faults() -> list[Fault]:
    return [f for f in Fault.objects.exclude(action="").order_by("point", "scope") if f.is_armed]
