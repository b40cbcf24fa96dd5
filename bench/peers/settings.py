"""Settings of the peers' benchmark project: the job queues a Django team would pick instead of
ours, each configured as documented, on a scratch database `reliable_peers`.

PEERS_DATABASE_URL  set by bench/peers/run.py (default: `reliable_peers` beside DATABASE_URL or
                    the project-local cluster)
PEERS_Q_BULK        django-q2's `bulk` (default 1)
PEERS_Q_BROKER      "postgres": this project's broker (pgbroker) for the processes started with it
"""

import os

import dj_database_url

from devtools.local_postgres import default_database_url


def peers_database_url() -> str:
    if os.environ.get("PEERS_DATABASE_URL"):
        return os.environ["PEERS_DATABASE_URL"]
    head, _, _ = (os.environ.get("DATABASE_URL") or default_database_url()).rpartition("/")
    return f"{head}/reliable_peers"


# Signs django-q2's payloads; the same in the runner and the workers. Scratch data only.
SECRET_KEY = "peers-bench-only-not-a-secret"
DEBUG = False
# both clusters on purpose: `qcluster` is django-q2's here, `pgbroker_qcluster` pgbroker's
SILENCED_SYSTEM_CHECKS = ["pgbroker.W101"]
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_q",  # before pgbroker: `qcluster` here is django-q2's stock cluster
    "pgbroker",  # this project's broker; its cluster is `pgbroker_qcluster` here
    "procrastinate.contrib.django",
    "django_tasks",
    "django_tasks_db",
    "bench.peers.jobs",
]

DATABASES = {
    "default": dj_database_url.parse(peers_database_url(), conn_max_age=60,
                                     conn_health_checks=True)
}

# --- django-q2 1.11.1: ORM broker, the stock cluster, the project's tuned values -------------
Q_CLUSTER = {
    "name": "peers",
    "orm": "default",
    "workers": 2,
    "bulk": int(os.environ.get("PEERS_Q_BULK", "1")),
    "queue_limit": 2,
    "poll": 0.1,
    "save_limit": 0,
    "timeout": 30,
    "retry": 120,
    "max_attempts": 5,
    "catch_up": False,
}
if os.environ.get("PEERS_Q_BROKER") == "postgres":  # the project's defaults for pgbroker
    Q_CLUSTER.update(broker_class="pgbroker.broker.PostgresBroker", bulk=50, queue_limit=20,
                     recycle=5000)

# --- procrastinate 3.x: the app is procrastinate.contrib.django.app; tasks autodiscovered from
# each app's tasks.py. Worker options come from `manage.py procrastinate worker` flags.

# --- django-tasks (backport of django.tasks) with django-tasks-db's ORM backend --------------
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: "
                                       "%(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
