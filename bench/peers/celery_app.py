"""The peers project's Celery app, as Celery's "First steps with Django" sets one up
(docs.celeryq.dev/en/stable/django/first-steps-with-django.html): configuration from the Django
settings under the CELERY_ namespace (bench/peers/settings.py), tasks from each app's tasks.py.

    .venv/bin/python -m celery -A bench.peers.celery_app worker --pool prefork --concurrency 2

(bench/peers/engines.py starts it so, from the checkout.) Importing this module before Django is
set up is fine: the Django fixup sets it up when the worker starts.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.settings")

app = Celery("peers")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
