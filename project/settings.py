"""Settings, read from the environment with safe development defaults.

DATABASE_URL   PostgreSQL to use (default: the project-local cluster, devtools/local_postgres.py)
SECRET_KEY     required when DEBUG is off; in development one is generated once into var/
DEBUG          "1"/"true" (default) or "0"/"false"
ALLOWED_HOSTS  comma-separated (default with DEBUG: localhost, 127.0.0.1)
FAULTS_ENABLED fault injection on/off (default: on with DEBUG, off without)
REDIS_URL      Redis to use (default: the project-local server, devtools/local_redis.py)
"""

import math
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from devtools.local_postgres import default_database_url
from devtools.local_redis import default_redis_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: expected 1/0, true/false, yes/no or on/off")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected an integer") from None


DEBUG = env_bool("DEBUG", True)


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY", "")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. With DEBUG off the secret key must come from the "
            "environment (SECRET_KEY=...); it is never generated or read from var/."
        )
    # Development: generate one and keep it, so sessions and signed task payloads survive
    # restarts and the cluster, the web server and the tests all sign with the same key.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
if DEBUG and not ALLOWED_HOSTS:
    ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "project.apps.ReliableAdminConfig",  # django.contrib.admin, plus the dashboard
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_extensions",
    "pgbroker",  # before django_q: its qcluster command replaces django-q2's
    "django_q",
    "faults",
    "jobs",
    "users",
    "outbox",
    "travel",
    "sagas",
    "dashboard",
    "experiments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "common.permissions.context",
            ],
        },
    },
]

WSGI_APPLICATION = "project.wsgi.application"

# PostgreSQL is the only store. CONN_MAX_AGE >= 60: with 0, django-q2 reconnects about five
# times per task (docs/design.md).
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or default_database_url(),
        conn_max_age=env_int("CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
# A vanished database host is noticed in seconds, not hours (its advisory locks, which tell
# who is alive, go with its sessions): connect timeout and TCP keepalives, unless the URL's
# OPTIONS say otherwise.
for _key, _value in {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
                     "keepalives_interval": 5, "keepalives_count": 3}.items():
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(_key, _value)
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL (postgresql://...)")
# An experiment's runner works on a scratch database (its `default`) and records the run in the
# project's own database through this second alias (experiments.runner).
if os.environ.get("RESULTS_DATABASE_URL"):
    DATABASES["results"] = dj_database_url.parse(os.environ["RESULTS_DATABASE_URL"],
                                                 conn_max_age=0)
# Tests and the cluster subprocesses they start share one test database name.
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME", "test_reliable")}

AUTH_USER_MODEL = "users.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Mail: files under var/mail/ in development and demos (open them to see the welcome emails),
# locmem in tests (Django's test runner switches to it), SMTP when EMAIL_BACKEND says so.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
# A slow mail server must not hold the user's row lock (taken by the email job) until the
# task's timeout: give up after this many seconds, and the job is retried.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "welcome@reliable.example")

# --- django-q2 -----------------------------------------------------------------------------
# Q_BROKER=postgres (default): this project's broker (pgbroker) and cluster. Jobs are rows in
# the business database, claimed in batches with SKIP LOCKED, woken by NOTIFY, and taken back
# the moment the process running them dies (liveness, not a lease).
# Q_BROKER=orm: django-q2's stock ORM broker, for comparison. Its claim is a lease (`retry`),
# which must outlast the worst case a leased task can wait before it is acknowledged: the
# tasks prefetched ahead of it (queue_limit + bulk, over the workers) plus its own run, each
# up to `timeout`. Shorter leases redeliver tasks that are still running or waiting.
Q_BROKER = os.environ.get("Q_BROKER", "postgres")  # an unknown one: `check` says reliable.E001
BROKER_CLASSES = {"postgres": "pgbroker.broker.PostgresBroker", "orm": None}
Q_WORKERS = env_int("Q_WORKERS", 2)
Q_TIMEOUT = env_int("Q_TIMEOUT", 30)
Q_QUEUE_LIMIT = env_int("Q_QUEUE_LIMIT", 2 if Q_BROKER == "orm" else 20)
Q_BULK = env_int("Q_BULK", 1 if Q_BROKER == "orm" else 50)
Q_RETRY = (math.ceil((Q_QUEUE_LIMIT + Q_BULK) / Q_WORKERS) + 1) * Q_TIMEOUT + Q_TIMEOUT

Q_CLUSTER = {
    "name": "reliable",
    # Jobs live on the *same* alias as the business tables: async_task() inside
    # transaction.atomic() is then an INSERT in that transaction, committed or rolled back with
    # the user row (Que's idea). A second alias would break the caller's transaction and commit
    # an orphan task (django-q2 #293).
    "orm": "default",
    "workers": Q_WORKERS,
    "timeout": Q_TIMEOUT,
    "retry": Q_RETRY,
    "queue_limit": Q_QUEUE_LIMIT,
    "bulk": Q_BULK,
    # Failing jobs are retried (with backoff under pgbroker, every `retry` seconds under the
    # ORM broker) up to this many attempts, the same as JOB_MAX_ATTEMPTS: our ledger parks the
    # job on its last failure. pgbroker also counts attempts that killed their worker.
    "max_attempts": env_int("Q_MAX_ATTEMPTS", env_int("JOB_MAX_ATTEMPTS", 5)),
    # Keep no successes in the monitor's hot path (save_limit > 0 prunes on every task, 3-4x
    # slower); jobs.tasks.cleanup_task_results trims old rows on a schedule instead.
    "save_limit": 0,
    "recycle": env_int("Q_RECYCLE", 5000),
    "poll": float(os.environ.get("Q_POLL", "0.1")),
    "catch_up": False,
    "label": "Task queue",
}
if BROKER_CLASSES.get(Q_BROKER):
    Q_CLUSTER["broker_class"] = BROKER_CLASSES[Q_BROKER]

# The talk's second store: Redis, where Sidekiq keeps its jobs. A second cluster on django-q2's
# Redis broker runs the jobs of the dual-write and outbox modes; it is django-q2's own
# multi-cluster setting, started as `Q_CLUSTER_NAME=redis manage.py qcluster` (make run does).
# Producers enqueue into it through jobs.queues, never through the default broker.
REDIS_URL = os.environ.get("REDIS_URL") or default_redis_url()
REDIS_CLUSTER = "redis"
Q_CLUSTER["redis"] = REDIS_URL
Q_CLUSTER["ALT_CLUSTERS"] = {
    REDIS_CLUSTER: {
        "broker_class": "django_q.brokers.redis_broker.Redis",
        "scheduler": False,  # the PostgreSQL cluster runs the schedules, once
        "queue_limit": env_int("Q_REDIS_QUEUE_LIMIT", Q_WORKERS * 2),
        "bulk": 1,
        "poll": 1,  # BLPOP's timeout: how long a dequeue waits for a job
        "label": "Task queue (Redis)",
    },
}

# --- this project's knobs (read inside functions, never at import) ---------------------------
FAULTS_ENABLED = env_bool("FAULTS_ENABLED", DEBUG)
OUTBOX_BATCH_SIZE = env_int("OUTBOX_BATCH_SIZE", 100)
OUTBOX_MAX_ATTEMPTS = env_int("OUTBOX_MAX_ATTEMPTS", 5)
OUTBOX_POLL_SECONDS = float(os.environ.get("OUTBOX_POLL_SECONDS", "5"))
# Promised but not done after this long (an email job a store lost): `reconcile` enqueues it again.
RECONCILE_AFTER_SECONDS = float(os.environ.get("RECONCILE_AFTER_SECONDS", "60"))
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 5)
CLUSTER_WAIT_SECONDS = float(os.environ.get("CLUSTER_WAIT_SECONDS", "5"))
SAGA_LEASE_SECONDS = float(os.environ.get("SAGA_LEASE_SECONDS", "10"))
SAGA_STEP_DEADLINE_SECONDS = float(os.environ.get("SAGA_STEP_DEADLINE_SECONDS", "5"))
SAGA_MAX_COMP_ATTEMPTS = env_int("SAGA_MAX_COMP_ATTEMPTS", 5)
SAGA_MAX_FORWARD_ATTEMPTS = env_int("SAGA_MAX_FORWARD_ATTEMPTS", 3)
SAGA_COMP_BACKOFF_SECONDS = float(os.environ.get("SAGA_COMP_BACKOFF_SECONDS", "1"))
TASK_RESULTS_KEEP_DAYS = env_int("TASK_RESULTS_KEEP_DAYS", 7)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # WARNING keeps commands quiet (faults still say when they fire); the background
    # processes `make run` starts log at INFO (devtools/supervise.py).
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
