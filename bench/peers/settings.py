"""Settings of the peers' benchmark project: the job queues a Django team would pick instead of
ours, each configured as documented, on a scratch database `reliable_peers`.

PEERS_DATABASE_URL  set by bench/peers/run.py (default: `reliable_peers` beside DATABASE_URL or
                    the project-local cluster)
PEERS_Q_BULK        django-q2's `bulk` (default 1)
PEERS_Q_BROKER      "postgres": this project's broker (pgbroker) for the processes started with it;
                    "redis": django-q2's stock Redis broker (its cluster pops from PEERS_REDIS_URL);
                    "reliable-redis": this project's Redis broker (reliable fetch), its cluster
PEERS_REDIS_URL     the peers' Redis (default: database 11 of REDIS_URL's server or of the
                    project-local one, devtools/local_redis.py); flushed by each Redis engine
PEERS_CELERY_ACKS_LATE  "1": Celery's task_acks_late + task_reject_on_worker_lost
"""

import os

import dj_database_url

from devtools.local_postgres import default_database_url
from devtools.local_redis import default_redis_url, with_db

PEERS_REDIS_DB = 11
PEERS_REDIS_URL = os.environ.get("PEERS_REDIS_URL") or with_db(
    os.environ.get("REDIS_URL") or default_redis_url(), PEERS_REDIS_DB)


def celery_url(url: str) -> str:
    """Kombu's and Celery's spelling of a Redis URL: a unix socket is
    redis+socket:///path?virtual_host=N (docs: getting-started/backends-and-brokers/redis)."""
    from urllib.parse import parse_qsl, urlencode

    if not url.startswith("unix://"):
        return url
    path, _, query = url[len("unix://"):].partition("?")
    params = dict(parse_qsl(query))
    db = params.pop("db", "0")
    return f"redis+socket://{path}?{urlencode({**params, 'virtual_host': db})}"


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
    "bench.peers.jobs",  # its tasks.py has the Celery tasks too (bench/peers/celery_app.py)
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
# django-q2's Redis broker (django_q.brokers.redis_broker.Redis) connects with Q_CLUSTER["redis"]
# wherever it is used: in the stock cluster with PEERS_Q_BROKER=redis (without "orm", django-q2
# picks Redis), and in the runner, which passes that broker to async_task(). `bulk`, `poll` and
# `retry` do nothing there: it pops one task at a time (BLPOP) and has no lease.
Q_CLUSTER["redis"] = PEERS_REDIS_URL
if os.environ.get("PEERS_Q_BROKER") == "redis":
    del Q_CLUSTER["orm"]
if os.environ.get("PEERS_Q_BROKER") == "reliable-redis":  # this project's Redis cluster
    del Q_CLUSTER["orm"]
    Q_CLUSTER.update(broker_class="pgbroker.reliable_redis.ReliableRedis", bulk=50,
                     queue_limit=20, recycle=5000)

# --- Celery 5.7 with its Redis broker and Redis result backend, the Django way
# (bench/peers/celery_app.py: config_from_object("django.conf:settings", namespace="CELERY")).
# Docs: docs.celeryq.dev/en/stable/django/first-steps-with-django.html,
# .../getting-started/backends-and-brokers/redis.html, .../userguide/optimizing.html.
CELERY_BROKER_URL = celery_url(PEERS_REDIS_URL)
# The common pairing: results (and so each task's SUCCESS) in the same Redis, one key each,
# kept for a day (result_expires). The runner counts succeeded tasks from these keys.
CELERY_RESULT_BACKEND = celery_url(PEERS_REDIS_URL)
# "many short-running tasks, and throughput/round trip latency is important": a large
# prefetch multiplier ("Say 64, or 128"; the default is 4), per process (2 processes: 128).
CELERY_WORKER_PREFETCH_MULTIPLIER = 64
# Redis broker: a message taken but not acknowledged comes back after visibility_timeout,
# 3600 s by default; kept (stated in the table, docs/benchmarks.md).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# Reliability, opt-in: acknowledge after the task ran, and requeue a task whose pool process
# died (without task_reject_on_worker_lost, Celery acknowledges it: lost all the same).
CELERY_TASK_ACKS_LATE = os.environ.get("PEERS_CELERY_ACKS_LATE") == "1"
CELERY_TASK_REJECT_ON_WORKER_LOST = CELERY_TASK_ACKS_LATE
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # LOGGING below, WARNING like the other workers

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
