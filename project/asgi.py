import os

from django.core.asgi import get_asgi_application

from common.env import or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# A bad environment setting: one line, and gunicorn stops instead of restarting the worker.
application = or_exit(get_asgi_application, code=3)
