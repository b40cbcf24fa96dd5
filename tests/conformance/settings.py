"""The settings of the clusters the conformance suite starts (DJANGO_SETTINGS_MODULE of their
processes): the test settings, plus a cache every process shares and this package's app.

django-q2 keeps `cached=True` results, `async_iter`'s arguments and its clusters' `Stat` in
Django's cache. The project configures none (each process has its own local memory), so the
suite gives every process, the test process included (conftest), the same database cache.
"""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

CACHE_TABLE = "conformance_cache"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache",
                      "LOCATION": CACHE_TABLE}}
# its ready() connects the signal receivers, when CONFORMANCE_SIGNALS=1 (apps.py)
INSTALLED_APPS = [*INSTALLED_APPS, "tests.conformance"]
