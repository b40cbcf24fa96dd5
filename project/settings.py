"""Settings, read from the environment with safe development defaults (common/env.py parses
every variable: a bad value stops startup with one line naming it).
docs/configuration.md lists them all; docs/production.md says how to run with DEBUG off.

DEBUG          "1"/"true" (default) or "0"/"false"
SECRET_KEY     required when DEBUG is off; in development one is generated once into var/
ALLOWED_HOSTS  comma-separated; required when DEBUG is off (default with DEBUG: localhost)
DATABASE_URL   PostgreSQL to use (default: the project-local cluster, devtools/local_postgres.py)
REDIS_URL      Redis to use (default: the project-local server, devtools/local_redis.py)
FAULTS_ENABLED      the faults app: fault points, breaking Redis, their admin page, command
                    and dashboard controls (default: on with DEBUG, off without)
EXPERIMENTS_ENABLED the experiments app: its admin pages and `manage.py experiment` (default:
                    on with DEBUG and faults, off without); it needs FAULTS_ENABLED
With DEBUG off, django_extensions (reset_db, print_settings, runscript...) is not installed.

With DEBUG off the HTTPS settings are on (`check --deploy` is clean): SSL redirect, HSTS,
secure cookies; SECURE_SSL_REDIRECT=0, SECURE_COOKIES=0, SECURE_HSTS_SECONDS=0 relax them for a
plain-HTTP run, TRUST_X_FORWARDED_PROTO=1 trusts a TLS-terminating proxy.
"""

import math
import os
import sys
from pathlib import Path
from typing import Any

import dj_database_url

from common import env
from devtools.local_postgres import default_database_url
from devtools.local_redis import default_redis_url
from ops import programs
from pgbroker.timing import Timing, TimingError, with_options

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

DEBUG = env.boolean("DEBUG", True)

if DEBUG:
    # Development: generated once and kept (mode 0600), so sessions and signed task payloads
    # survive restarts and the cluster, the web server and the tests all sign with one key.
    SECRET_KEY = env.text("SECRET_KEY", "") or env.secret_file(VAR_DIR / "secret_key")
    ALLOWED_HOSTS = env.strings("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
else:
    SECRET_KEY = env.required(
        "SECRET_KEY", "with DEBUG off the secret key must come from the environment "
        "(SECRET_KEY=..., 50 random characters); it is never generated or read from var/")
    ALLOWED_HOSTS = env.strings("ALLOWED_HOSTS", [])
    if not ALLOWED_HOSTS:
        raise env.EnvError("ALLOWED_HOSTS is not set: with DEBUG off list the host names this "
                           "site answers to, comma-separated (ALLOWED_HOSTS=example.com)")
# Origins (scheme://host) a form may be posted from besides the site's own, e.g. when a proxy
# changes the host name: CSRF_TRUSTED_ORIGINS=https://ops.example.com
CSRF_TRUSTED_ORIGINS = env.strings("CSRF_TRUSTED_ORIGINS", [])

# --- HTTPS: on by default with DEBUG off (manage.py check --deploy reports nothing) -----------
# Behind a proxy that terminates TLS: TRUST_X_FORWARDED_PROTO=1, and the proxy must set (and
# overwrite) X-Forwarded-Proto. Never set it when clients reach the server directly.
if env.boolean("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# A plain-HTTP run (a local try-out): SECURE_SSL_REDIRECT=0 SECURE_COOKIES=0.
SECURE_SSL_REDIRECT = env.boolean("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.boolean("SECURE_COOKIES", not DEBUG)
# HSTS is sent on HTTPS responses only. A year, subdomains and preload are what check --deploy
# asks for; SECURE_HSTS_SECONDS=0 turns it off (say, while HTTPS is new on the domain).
SECURE_HSTS_SECONDS = env.integer("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000,
                                  low=0, high=63_072_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.boolean("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env.boolean("SECURE_HSTS_PRELOAD", not DEBUG)

# --- development machinery: on with DEBUG, off without, unless switched on explicitly ---------
# (docs/production.md, "Development machinery"). An app switched off is not installed: no admin
# page, command, dashboard control or URL of it exists; code elsewhere that passes a fault point
# runs on (faults.services.fire() does nothing while FAULTS_ENABLED is off).
FAULTS_ENABLED = env.boolean("FAULTS_ENABLED", DEBUG)
EXPERIMENTS_ENABLED = env.boolean("EXPERIMENTS_ENABLED", DEBUG and FAULTS_ENABLED)
if EXPERIMENTS_ENABLED and not FAULTS_ENABLED:
    raise env.EnvError("EXPERIMENTS_ENABLED is on but FAULTS_ENABLED is off: an experiment "
                       "injects faults; set FAULTS_ENABLED=1 too, or EXPERIMENTS_ENABLED=0")

INSTALLED_APPS = [
    "project.apps.ReliableAdminConfig",  # django.contrib.admin, plus the dashboard
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    *(["django_extensions"] if DEBUG else []),  # reset_db, print_settings, runscript...
    "pgbroker",  # before django_q: its qcluster command replaces django-q2's
    "django_q",
    *(["faults"] if FAULTS_ENABLED else []),
    "jobs",
    "users",
    "outbox",
    "travel",
    "sagas",
    "dashboard",
    "retention",
    "ops",  # /metrics, /healthz/*, `manage.py health` (docs/metrics.md)
    *(["experiments"] if EXPERIMENTS_ENABLED else []),
]

MIDDLEWARE = [
    # /healthz/live and /healthz/ready, answered before anything else: a probe gets no HTTPS
    # redirect, needs no allowed host name, no session, no login (docs/metrics.md)
    "ops.middleware.HealthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # With DEBUG off the app serves its own static files (whitenoise, from STATIC_ROOT, which
    # `make run` fills with collectstatic); with DEBUG on runserver serves them.
    *([] if DEBUG else ["whitenoise.middleware.WhiteNoiseMiddleware"]),
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # no connection slot in PostgreSQL: 503 with Retry-After, one log line a minute
    "common.middleware.NoSlotMiddleware",
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


def _database(name: str, default: str, **options) -> dict[str, Any]:
    """The PostgreSQL database the URL in `name` names. The URL is never shown in the error:
    it may hold a password."""
    try:
        parsed = dict(dj_database_url.parse(env.text(name, "") or default, **options))
    except ValueError:  # dj_database_url's ParseError and UnknownSchemeError
        parsed = {}
    if parsed.get("ENGINE") != "django.db.backends.postgresql":
        raise env.EnvError(f"{name} (not shown: it may hold a password): expected a PostgreSQL "
                           "URL, postgresql://user:password@host:5432/name")
    return parsed


DATABASES = {
    "default": _database("DATABASE_URL", default_database_url(),
                         conn_max_age=env.integer("CONN_MAX_AGE", 60, low=0, high=86_400),
                         conn_health_checks=True),
}
# A vanished peer is noticed in seconds, not hours, on both sides of every connection, in an
# order that stops a cut-off cluster's workers before its jobs can be taken back (the formula
# is in pgbroker/timing.py and docs/guarantees.md), unless the URL's OPTIONS say otherwise.
try:
    PGBROKER_TIMING = Timing(
        fence=env.number("PGBROKER_FENCE_SECONDS", 2.5, low=0.1, high=3600),
        client_timeout_ms=env.integer("PGBROKER_CLIENT_TIMEOUT_MS", 2000, low=100,
                                      high=3_600_000),
        server_timeout_ms=env.integer("PGBROKER_SERVER_TIMEOUT_MS", 6000, low=100,
                                      high=3_600_000),
        idle_in_transaction_ms=env.integer("PG_IDLE_IN_TRANSACTION_MS", 60_000, low=1000,
                                           high=86_400_000))
except TimingError as _e:
    raise env.EnvError(str(_e)) from None
DATABASES["default"]["OPTIONS"] = with_options(DATABASES["default"].get("OPTIONS", {}),
                                               PGBROKER_TIMING)


def _program() -> str:
    """What this process is, as pg_stat_activity shows its connections (the connection
    budget, docs/production.md): "reliable qcluster redis", "reliable relay_outbox",
    "reliable gunicorn"..."""
    argv = sys.argv or [""]
    name = Path(argv[0]).name
    if name == "manage.py" and len(argv) > 1:
        name = argv[1]
        if name == "qcluster":
            name += " " + (os.environ.get("Q_CLUSTER_NAME") or "default")
    return f"reliable {name}"[:63]


DATABASES["default"]["OPTIONS"].setdefault("application_name", _program())
# A dispatcher whose loop stood still this long (stopped, stuck) is killed by its cluster's main
# process, so its workers let go of the cluster's key and another cluster takes its jobs.
PGBROKER_HANG_SECONDS = env.number("PGBROKER_HANG_SECONDS", 10, low=1, high=3600)
# An experiment's runner works on a scratch database (its `default`) and records the run in the
# project's own database through this second alias (experiments.runner).
if env.text("RESULTS_DATABASE_URL", ""):
    DATABASES["results"] = _database("RESULTS_DATABASE_URL", "", conn_max_age=0)
# Tests and the cluster subprocesses they start share one test database name.
DATABASES["default"]["TEST"] = {"NAME": env.text("TEST_DATABASE_NAME", "test_reliable")}

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
# `collectstatic` (make run does it with DEBUG off) copies, compresses and fingerprints the
# static files here; whitenoise serves them with far-future cache headers.
STATIC_ROOT = Path(env.text("STATIC_ROOT", str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage" if DEBUG
                    else "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Mail: files under var/mail/ in development and demos (open them to see the welcome emails),
# locmem in tests (Django's test runner switches to it), SMTP when EMAIL_BACKEND says so.
EMAIL_BACKEND = env.text("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = env.text("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = env.text("EMAIL_HOST", "localhost")
EMAIL_PORT = env.integer("EMAIL_PORT", 25, low=1, high=65_535)
# A slow mail server must not hold the user's row lock (taken by the email job) until the
# task's timeout: give up after this many seconds, and the job is retried.
EMAIL_TIMEOUT = env.integer("EMAIL_TIMEOUT", 10, low=1, high=3600)
DEFAULT_FROM_EMAIL = env.text("DEFAULT_FROM_EMAIL", "welcome@reliable.example")

# --- django-q2 -----------------------------------------------------------------------------
# Q_BROKER=postgres (default): this project's broker (pgbroker) and cluster. Jobs are rows in
# the business database, claimed in batches with SKIP LOCKED, woken by NOTIFY, and taken back
# the moment the process running them dies (liveness, not a lease).
# Q_BROKER=orm: django-q2's stock ORM broker, for comparison. Its claim is a lease (`retry`),
# which must outlast the worst case a leased task can wait before it is acknowledged: the
# tasks prefetched ahead of it (queue_limit + bulk, over the workers) plus its own run, each
# up to `timeout`. Shorter leases redeliver tasks that are still running or waiting.
Q_BROKER = env.text("Q_BROKER", "postgres")  # an unknown one: `check` says reliable.E001
BROKER_CLASSES = {"postgres": "pgbroker.broker.PostgresBroker", "orm": None}
Q_WORKERS = env.integer("Q_WORKERS", 2, low=1, high=256)
Q_TIMEOUT = env.integer("Q_TIMEOUT", 30, low=1, high=86_400)
Q_QUEUE_LIMIT = env.integer("Q_QUEUE_LIMIT", 2 if Q_BROKER == "orm" else 20, low=1, high=100_000)
Q_BULK = env.integer("Q_BULK", 1 if Q_BROKER == "orm" else 50, low=1, high=10_000)
# Attempts before a failing job is parked (jobs.services) and before the queue gives up on it.
JOB_MAX_ATTEMPTS = env.integer("JOB_MAX_ATTEMPTS", 5, low=1, high=1000)
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
    "max_attempts": env.integer("Q_MAX_ATTEMPTS", JOB_MAX_ATTEMPTS, low=0, high=1000),
    # Keep no successes in the monitor's hot path (save_limit > 0 prunes on every task, 3-4x
    # slower); jobs.tasks.cleanup_task_results trims old rows on a schedule instead.
    "save_limit": 0,
    "recycle": env.integer("Q_RECYCLE", 5000, low=1, high=10_000_000),
    "poll": env.number("Q_POLL", 0.1, low=0.01, high=60),
    "catch_up": False,
    "label": "Task queue",
}
if BROKER_CLASSES.get(Q_BROKER):
    Q_CLUSTER["broker_class"] = BROKER_CLASSES[Q_BROKER]

# The talk's second store: Redis, where Sidekiq keeps its jobs. A second cluster on a Redis
# broker with reliable fetch (pgbroker.reliable_redis: producers RPUSH as onto django-q2's Redis
# broker; the cluster moves what it takes into an in-flight list of its own) runs the jobs of
# the dual-write and outbox modes; it is django-q2's own multi-cluster setting, started as
# `Q_CLUSTER_NAME=redis manage.py qcluster` (make run does). Producers enqueue into it through
# jobs.queues, never through the default broker.
REDIS_URL = env.text("REDIS_URL", "") or default_redis_url()
REDIS_CLUSTER = "redis"
Q_CLUSTER["redis"] = REDIS_URL
Q_CLUSTER["ALT_CLUSTERS"] = {
    REDIS_CLUSTER: {
        # reliable fetch, with timeouts and keepalives on its connections
        "broker_class": "jobs.queues.RedisClusterBroker",
        "scheduler": False,  # the PostgreSQL cluster runs the schedules, once
        "queue_limit": env.integer("Q_REDIS_QUEUE_LIMIT", 20, low=1, high=100_000),
        "bulk": 50,  # jobs moved into the in-flight list per take, at most
        "label": "Task queue (Redis)",
    },
}

# --- this project's knobs (read inside functions, never at import) ---------------------------
# This machine's name in the clusters' table, logs and the job history (the lab's simulated
# hosts share one kernel, and so one hostname).
HOST_NAME = env.text("HOST_NAME", "")
# Where every job attempt is written down for checking afterwards (pgbroker/history.py); off
# when empty. Experiments set it.
JOB_HISTORY_DIR = env.text("JOB_HISTORY_DIR", "")
OUTBOX_BATCH_SIZE = env.integer("OUTBOX_BATCH_SIZE", 100, low=1, high=10_000)
OUTBOX_MAX_ATTEMPTS = env.integer("OUTBOX_MAX_ATTEMPTS", 5, low=1, high=1000)
OUTBOX_POLL_SECONDS = env.number("OUTBOX_POLL_SECONDS", 5, low=0.01, high=3600)
# Promised but not done after this long (an email job a store lost): `reconcile` enqueues it again.
RECONCILE_AFTER_SECONDS = env.number("RECONCILE_AFTER_SECONDS", 60, low=0, high=30 * 86_400)
CLUSTER_WAIT_SECONDS = env.number("CLUSTER_WAIT_SECONDS", 5, low=0.1, high=600)
SAGA_LEASE_SECONDS = env.number("SAGA_LEASE_SECONDS", 10, low=0.1, high=86_400)
SAGA_STEP_DEADLINE_SECONDS = env.number("SAGA_STEP_DEADLINE_SECONDS", 5, low=0.1, high=86_400)
SAGA_MAX_COMP_ATTEMPTS = env.integer("SAGA_MAX_COMP_ATTEMPTS", 5, low=1, high=1000)
SAGA_MAX_FORWARD_ATTEMPTS = env.integer("SAGA_MAX_FORWARD_ATTEMPTS", 3, low=1, high=1000)
SAGA_COMP_BACKOFF_SECONDS = env.number("SAGA_COMP_BACKOFF_SECONDS", 1, low=0, high=3600)
# A coordinator (or a choreographed service) advancing a batch of sagas runs a step that is not
# idempotent (the flight) for at most this many sagas between two commits: a crash leaves at
# most this many in doubt, each compensated (backward recovery). 1: one saga at a time.
SAGA_IN_DOUBT_MAX = env.integer("SAGA_IN_DOUBT_MAX", 4, low=1, high=50)
TASK_RESULTS_KEEP_DAYS = env.integer("TASK_RESULTS_KEEP_DAYS", 7, low=1, high=3650)

# --- metrics and health probes (ops/, docs/metrics.md) -----------------------------------------
# /metrics answers a scraper that sends this token (`Authorization: Bearer <token>`, or basic
# auth with it as the password), and people signed in with the dashboard's view permission.
# Unset: people only.
METRICS_TOKEN = env.text("METRICS_TOKEN", "")
if METRICS_TOKEN and (len(METRICS_TOKEN) < 32 or not METRICS_TOKEN.isprintable()
                      or " " in METRICS_TOKEN):
    raise env.EnvError("METRICS_TOKEN (not shown) must be 32 or more printable characters "
                       "without spaces: python3 -c 'import secrets; "
                       "print(secrets.token_urlsafe(32))'")
# The jobs finished this recently (at most this many, the newest) are what /metrics' run
# times and finished counts describe: read from django-q2's result rows, never counted per job.
METRICS_WINDOW_SECONDS = env.number("METRICS_WINDOW_SECONDS", 60, low=5, high=3600)
METRICS_WINDOW_JOBS = env.integer("METRICS_WINDOW_JOBS", 10_000, low=100, high=1_000_000)
# Gauges of a model's rows per value of its choice fields, for tables that stay short (the
# sagas: the active ones, and the finished ones for RETAIN_SAGAS_DAYS): metric -> (model, fields)
METRICS_ROW_COUNTS = {"reliable_sagas": ("sagas.Saga", ["state", "style"])}
# Each long-running program (qcluster, qcluster-redis, relay, recoverer) writes how it is to
# STATUS_DIR/<program>.json about once a second; `manage.py health <program>` reads it.
STATUS_DIR = Path(env.text("STATUS_DIR", str(VAR_DIR / "run")))
STATUS_PROGRAM = programs.program_of(sys.argv, os.environ)  # this process's, or ""
STATUS_FILE = str(programs.status_file(STATUS_DIR, STATUS_PROGRAM)) if STATUS_PROGRAM else ""
# the clusters' dispatchers write it (pgbroker/README.md); the --follow commands, common.stopping
PGBROKER_STATUS_FILE = STATUS_FILE if STATUS_PROGRAM.startswith("qcluster") else ""

# --- a year of history (docs/retention.md) ---------------------------------------------------
# Reconciliation looks this far back for promised work never done (outbox/services.py).
RECONCILE_WINDOW_DAYS = 1
# A duplicate of a job can still arrive this long after its first run: a copy still queued is
# never pruned past (`prune` checks), and reconciliation makes copies only within its window.
# An idempotency ledger kept shorter would let a duplicate run twice: refused.
REDELIVERY_HORIZON_DAYS = RECONCILE_WINDOW_DAYS + 1
HORIZON = (f"a duplicate of a job can still arrive {REDELIVERY_HORIZON_DAYS} days after it ran "
           "(the redelivery horizon, docs/retention.md)")
RETENTION_DAYS = {
    # what `manage.py prune` deletes, days after it finished (published, sent, ran, ended)
    "outbox_published": env.integer("RETAIN_OUTBOX_PUBLISHED_DAYS", 7,
                                    low=REDELIVERY_HORIZON_DAYS, high=3650, why=HORIZON),
    "relay_attempts": env.integer("RETAIN_RELAY_ATTEMPTS_DAYS", 7, low=1, high=3650),
    "job_runs": env.integer("RETAIN_JOB_RUNS_DAYS", 7, low=REDELIVERY_HORIZON_DAYS, high=3650,
                            why=HORIZON),
    "job_results": TASK_RESULTS_KEEP_DAYS,
    "email_ledger": env.integer("RETAIN_EMAIL_LEDGER_DAYS", 30, low=REDELIVERY_HORIZON_DAYS,
                                high=3650, why=HORIZON),
    # a saga's bookings are its steps' idempotency keys
    "sagas_finished": env.integer("RETAIN_SAGAS_DAYS", 30, low=REDELIVERY_HORIZON_DAYS,
                                  high=3650, why=HORIZON),
    "experiments": env.integer("RETAIN_EXPERIMENTS_DAYS", 30, low=1, high=3650),
    "mail_files": env.integer("RETAIN_MAIL_FILES_DAYS", 7, low=1, high=3650),
    "faults_spent": env.integer("RETAIN_SPENT_FAULTS_DAYS", 7, low=1, high=3650),
    # days after a session expired
    "sessions": env.integer("RETAIN_EXPIRED_SESSIONS_DAYS", 0, low=0, high=3650),
}
PRUNE_BATCH = env.integer("PRUNE_BATCH", 2000, low=1, high=100_000)  # rows per transaction
# The audit (dashboard/audit.py) passes a row once it is this old: no transaction still
# writing a row with a lower id can be open (idle_in_transaction ends them after 60 s).
AUDIT_SETTLE_SECONDS = env.number("AUDIT_SETTLE_SECONDS", 300, low=60, high=86_400)

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # WARNING keeps commands quiet (faults still say when they fire); the background
    # processes `make run` starts log at INFO (devtools/supervise.py).
    "root": {"handlers": ["console"],
             "level": env.choice("LOG_LEVEL", "WARNING", LOG_LEVELS, upper=True)},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
