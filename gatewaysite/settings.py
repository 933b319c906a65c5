"""Settings for the LLM gateway, driven by environment variables.

With no environment at all this is the embedded demo: SQLite, an in-process Redis stand-in
(fakeredis with Lua), eager Celery and the simulated provider. Production behaviour comes
from DATABASE_URL, REDIS_URL, CELERY_BROKER_URL, SECRET_KEY and the provider keys; every
variable is listed in `.env.example`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from gateway import redisurl
from gateway.redisurl import cluster_config, sentinel_config

BASE_DIR = Path(__file__).resolve().parent.parent


# Every variable this module reads, so that no Provider may name one as its API key
# (gateway/keyvars.py); the env_* helpers add to it, including for settings added later.
ENV_VARS_READ: set[str] = set()


def env_str(name: str, default: str = "") -> str:
    ENV_VARS_READ.add(name)
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    ENV_VARS_READ.add(name)
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def env_int(name: str, default: int) -> int:
    ENV_VARS_READ.add(name)
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    ENV_VARS_READ.add(name)
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_list(name: str, default: list[str]) -> list[str]:
    ENV_VARS_READ.add(name)
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")

# Demo mode: nothing external configured. DEBUG is on only here.
EMBEDDED = not (DATABASE_URL or REDIS_URL or CELERY_BROKER_URL)
DEBUG = env_bool("DEBUG", EMBEDDED)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not EMBEDDED:
        raise ImproperlyConfigured("SECRET_KEY must be set outside the embedded demo mode")
    SECRET_KEY = "embedded-demo-only-not-secret-" + "x" * 32

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"] if EMBEDDED else ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # `runserver` leaves static files to WhiteNoise too, as uvicorn does.
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "gateway",
    "budgets",
    "reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "gatewaysite.staticfiles.StaticFilesMiddleware",  # /static/… and /favicon.ico (WhiteNoise)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "gateway.loginguard.LoginRateLimitMiddleware",  # 5 failed logins / 15 min → 429
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gatewaysite.urls"
ASGI_APPLICATION = "gatewaysite.asgi.application"
WSGI_APPLICATION = "gatewaysite.wsgi.application"

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
            ],
        },
    },
]

if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH") or str(BASE_DIR / "db.sqlite3"),
            "OPTIONS": {"timeout": 20},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_URL:
    _cache_options: dict = {}
else:
    # The same in-process fakeredis server that gateway.runtime uses for the hot path
    # (django-redis wants the class itself here, not its dotted path).
    from fakeredis import FakeRedisConnection

    _cache_options = {"CONNECTION_POOL_KWARGS": {"connection_class": FakeRedisConnection}}
_location = REDIS_URL or "redis://embedded:6379/0"
_sentinel = sentinel_config(REDIS_URL)
if _sentinel is not None:
    # django-redis through the sentinels, on the primary only: its SentinelClient reads from
    # replicas, and the login guard must read the count it has just written.
    _location = f"redis://{_sentinel.service}/{_sentinel.db}?is_master=1"
    DJANGO_REDIS_CONNECTION_FACTORY = "django_redis.pool.SentinelConnectionFactory"
    _cache_options = {
        "SENTINELS": list(_sentinel.sentinels),
        "SENTINEL_KWARGS": _sentinel.sentinel_kwargs(),
        **({"PASSWORD": _sentinel.password} if _sentinel.password else {}),
    }
if cluster_config(REDIS_URL) is not None:
    # django-redis has no cluster client of its own: the login guard's counts go through
    # redis-py's (gateway/runtime.py ClusterConnectionFactory), each one key, one slot.
    DJANGO_REDIS_CONNECTION_FACTORY = "gateway.runtime.ClusterConnectionFactory"
redisurl.configure(REDIS_URL)  # key names with cluster hash tags, or as they always were
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _location,
        "OPTIONS": _cache_options,
        "KEY_PREFIX": "dj",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Managers (and staff) sign in to the dashboards here; the admin has its own login page.
LOGIN_URL = "reports:login"
LOGIN_REDIRECT_URL = "reports:overview"
# The login forms whose failed attempts gateway/loginguard.py counts, all against one limit
# per address and username: a second form must not be a way around the admin's.
# The login forms whose POSTs gateway.loginguard counts and limits (URL names or paths); they
# share one count. A successful login answers 302 and clears the count; any other answer keeps it.
GUARDED_LOGIN_URLS = ["admin:login", "reports:login"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files (gatewaysite/staticfiles.py serves them) --------------------------------
STATIC_URL = "static/"
# Where `collectstatic` writes; with DEBUG off only what is there is served.
# `or`: an empty STATIC_ROOT= (as a copied .env.example has) is the default, not the cwd.
STATIC_ROOT = Path(env_str("STATIC_ROOT") or str(BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").exists() else []
# Production: `collectstatic` writes each file under a content-hashed name (cached for a year,
# a new name when it changes) plus its gzip and brotli variants; pages name the hashed files.
# DEBUG: the files are served as they are in the source tree, no `collectstatic` needed.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "gateway.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# The OpenAPI schema at /api/schema/ (gateway/schema.py describes the views).
SPECTACULAR_SETTINGS = {
    "TITLE": "LLM gateway",
    "DESCRIPTION": "An OpenAI-compatible LLM gateway: routing, fallback, caching, cost, budgets.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "PREPROCESSING_HOOKS": ["gateway.schema.document_plain_views"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "gateway.schema.add_components",
    ],
    "COMPONENT_SPLIT_REQUEST": True,
}
# Bearer token Prometheus sends to scrape /metrics; unset = /metrics only in DEBUG.
METRICS_TOKEN = env_str("METRICS_TOKEN")

# --- Celery -----------------------------------------------------------------------------
# With a host named: kombu warns "No hostname was supplied" about a bare memory:// each time
# an eager task (a budget alert in the demo) opens its connection.
CELERY_BROKER_URL = CELERY_BROKER_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not env_str("CELERY_BROKER_URL"))
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_TIME_LIMIT = 60
CELERY_TASK_SOFT_TIME_LIMIT = 50
CELERY_TASK_ACKS_LATE = True
CELERY_TIMEZONE = "UTC"
# Every task goes to this deployment's own queue: deployments that share a broker (give each
# its own vhost too: amqp://user:password@host:5672/llm-gateway) never run each other's tasks.
# A worker started without -Q consumes exactly this queue.
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "llm-gateway")
# Beat's state file, outside the code (var/ is gitignored); losing it only means each
# periodic task runs once at beat's start, and the digest waits for its hour anyway.
CELERY_BEAT_SCHEDULE_FILENAME = env_str(
    "CELERY_BEAT_SCHEDULE_FILENAME", str(BASE_DIR / "var" / "celerybeat-schedule")
)
CELERY_BEAT_SCHEDULER = "gatewaysite.celery:Scheduler"  # makes the file's folder first
# The hour (UTC) the daily spend digest is sent; each team's digest covers its own yesterday.
DIGEST_HOUR_UTC = env_int("GATEWAY_DIGEST_HOUR_UTC", 6)
# The dashboards' team and feature filters are drop-down lists up to this many names, text
# boxes with suggestions as you type beyond it (reports/filters.py).
REPORTS_SELECT_LIMIT = env_int("GATEWAY_REPORTS_SELECT_LIMIT", 200)


def _every(seconds: float, task: str) -> dict:
    # A run that waited longer than most of its interval (the worker was down) is dropped:
    # the next one does the same work, so a backlog never piles up in the broker.
    return {"task": task, "schedule": seconds, "options": {"expires": seconds * 0.8}}


CELERY_BEAT_SCHEDULE = {
    "drain-ledger": _every(5.0, "gateway.tasks.drain_ledger"),
    "sweep-lost-requests": _every(30.0, "gateway.tasks.sweep_lost_requests"),
    "reconcile-budget-counters": _every(300.0, "budgets.tasks.reconcile_counters"),
    "roll-up-usage": _every(60.0, "reports.tasks.roll_up_recent"),
    "detect-incidents": _every(60.0, "reports.tasks.detect_incidents"),
    "learn-output-caps": _every(3600.0, "gateway.tasks.learn_output_caps"),
    "maintain-ledger": _every(3600.0, "gateway.tasks.maintain_ledger"),
    "daily-spend-digest": {
        "task": "budgets.tasks.send_daily_digests",
        "schedule": crontab(minute=0, hour=DIGEST_HOUR_UTC),
        "options": {"expires": 12 * 3600},
    },
    # Last month's one-page report (reports/monthly.py) to each team's budget contacts.
    "monthly-report": {
        "task": "reports.tasks.send_monthly_reports",
        "schedule": crontab(minute=30, hour=DIGEST_HOUR_UTC, day_of_month=1),
        "options": {"expires": 24 * 3600},
    },
}

# --- E-mail -----------------------------------------------------------------------------
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if EMBEDDED
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "llm-gateway@localhost")

# --- Gateway ----------------------------------------------------------------------------
# One request-size limit: Django's own check on a declared body (admin forms, and /v1 when a
# view reads `request.body`) is the gateway's, so the 413 always names the same limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024)
GATEWAY = {
    # Largest request body accepted by /v1/chat/completions, in bytes (413 beyond).
    "MAX_BODY_BYTES": DATA_UPLOAD_MAX_MEMORY_SIZE,
    # Request headers a client may send: how many, and their names and values in all, in
    # bytes (431 beyond, on every path). Checked before the body is read.
    "MAX_HEADERS": env_int("GATEWAY_MAX_HEADERS", 100),
    "MAX_HEADER_BYTES": env_int("GATEWAY_MAX_HEADER_BYTES", 16 * 1024),
    # Overall deadline for one request across every fallback attempt, in seconds (504 beyond).
    "REQUEST_DEADLINE_S": env_float("GATEWAY_REQUEST_DEADLINE_S", 120.0),
    # How long a process trusts its copy of keys, models and routes. This is the bound on how
    # long a revoked key or an edited price can still be seen by another process.
    # The hot path's uses of library internals (gateway/fastpath/README.md). 0 serves /v1
    # with Django's stock handler, redis-py's pipelines and httpx's own transport instead.
    "FAST_PATH": env_bool("GATEWAY_FAST_PATH", True),
    # How often a worker checks the config version (its refresh reads only what changed;
    # changes also arrive at once by pub/sub), and how often it reads everything again
    # whatever the version says (writes that bypass the ORM's signals). gateway/configstore.py
    "CONFIG_TTL_S": env_float("GATEWAY_CONFIG_TTL_S", 5.0),
    "CONFIG_FULL_RELOAD_S": env_float("GATEWAY_CONFIG_FULL_RELOAD_S", 300.0),
    "CIRCUIT_FAILURES": env_int("GATEWAY_CIRCUIT_FAILURES", 5),
    "CIRCUIT_COOLDOWN_S": env_int("GATEWAY_CIRCUIT_COOLDOWN_S", 30),
    "DEFAULT_CACHE_TTL_S": env_int("GATEWAY_DEFAULT_CACHE_TTL_S", 3600),
    # How long a budget reservation lives if its process dies before settling it.
    "RESERVATION_TTL_S": env_int("GATEWAY_RESERVATION_TTL_S", 300),
    # How long a settled request's marker makes a repeated settle (a retried round trip) add
    # nothing; the lost-request sweep's markers live RESERVATION_TTL_S (docs/operations.md).
    "SETTLED_MARKER_TTL_S": env_int("GATEWAY_SETTLED_MARKER_TTL_S", 60),
    # A request not settled by its deadline plus this is swept as `lost` (gateway/inflight.py).
    "LOST_GRACE_S": env_float("GATEWAY_LOST_GRACE_S", 30.0),
    # Run the ledger drainer inside the web process (always true in the embedded demo).
    "LEDGER_IN_PROCESS": env_bool("GATEWAY_LEDGER_IN_PROCESS", True),
    # Run the beat schedule's other tasks (incidents, roll-up repairs, reconciliation, output
    # caps, digest, monthly report) inside the web process: where no worker and beat run,
    # the embedded mode (gateway/inprocbeat.py). Off with a real Celery beat.
    "BEAT_IN_PROCESS": env_bool("GATEWAY_BEAT_IN_PROCESS", EMBEDDED),
    "LEDGER_FLUSH_INTERVAL_S": env_float("GATEWAY_LEDGER_FLUSH_INTERVAL_S", 0.5),
    # Ledger queues in Redis, a drain lock each (team id % this): drains run in parallel.
    # Drainers look in all 64, so it may change at any deploy (gateway/ledger.py).
    "LEDGER_SHARDS": env_int("GATEWAY_LEDGER_SHARDS", 4),
    # Days of ledger rows kept; older whole days are archived (gzip'd CSV, in
    # GATEWAY_LEDGER_ARCHIVE_DIR) and dropped every hour, roll-ups kept. 0 keeps every row.
    "LEDGER_RETENTION_DAYS": env_int("GATEWAY_LEDGER_RETENTION_DAYS", 0),
    # Failed authentications (unknown, revoked or expired key) allowed per client address and
    # minute before the API answers 429; counted in Redis across processes. 0 disables.
    "AUTH_FAILURES_PER_MINUTE": env_int("GATEWAY_AUTH_FAILURES_PER_MINUTE", 60),
    # Proxies in front of the gateway that append to X-Forwarded-For; 0 trusts only the socket.
    "TRUSTED_PROXY_HOPS": env_int("GATEWAY_TRUSTED_PROXY_HOPS", 0),
    # How long a key hash found unknown is refused without reloading the config.
    "AUTH_NEGATIVE_TTL_S": env_float("GATEWAY_AUTH_NEGATIVE_TTL_S", 5.0),
    # Unknown keys reload the config at most this often (per process), however many arrive.
    "AUTH_RELOAD_INTERVAL_S": env_float("GATEWAY_AUTH_RELOAD_INTERVAL_S", 1.0),
    # Output caps (docs/configuration.md, "Output caps and budget reservations"): what a
    # request that sends no max_tokens may produce, sent upstream and held by its budgets.
    # Used until a feature has a learned cap (or an admin's); never above the model's max.
    "OUTPUT_CAP_DEFAULT": env_int("GATEWAY_OUTPUT_CAP_DEFAULT", 2048),
    # learn-output-caps: this percentile of a feature's answers over the window, floored.
    "OUTPUT_CAP_PERCENTILE": env_float("GATEWAY_OUTPUT_CAP_PERCENTILE", 99.9),
    "OUTPUT_CAP_WINDOW_DAYS": env_int("GATEWAY_OUTPUT_CAP_WINDOW_DAYS", 7),
    "OUTPUT_CAP_FLOOR": env_int("GATEWAY_OUTPUT_CAP_FLOOR", 1024),
    # Fewer answers than this in the window: nothing is learned (the default applies).
    "OUTPUT_CAP_MIN_SAMPLES": env_int("GATEWAY_OUTPUT_CAP_MIN_SAMPLES", 100),
    # Seconds between SIGTERM and uvicorn's shutdown, while /readyz answers 503 so the load
    # balancer stops sending (gateway/drain.py). Make it longer than the load balancer's
    # health check interval x its unhealthy threshold.
    "DRAIN_S": env_float("GATEWAY_DRAIN_S", 0.0 if DEBUG else 10.0),
}
if not 1 <= GATEWAY["LEDGER_SHARDS"] <= 64:
    raise ImproperlyConfigured(
        f"GATEWAY_LEDGER_SHARDS={GATEWAY['LEDGER_SHARDS']} is not between 1 and 64"
    )
if GATEWAY["LEDGER_RETENTION_DAYS"] < 0:
    raise ImproperlyConfigured("GATEWAY_LEDGER_RETENTION_DAYS must be 0 (keep all) or more")
# Where pruneledger writes the ledger days it removes (ledger-YYYY-MM-DD.csv.gz).
GATEWAY_LEDGER_ARCHIVE_DIR = env_str("GATEWAY_LEDGER_ARCHIVE_DIR", str(BASE_DIR / "var" / "ledger"))

# --- Admin and dashboard security (docs/security.md) ----------------------------------------
# The environment variables a Provider may name as its `api_key_env`: comma-separated glob
# patterns. Django's and the infrastructure's settings are refused whatever this says.
GATEWAY_PROVIDER_KEY_VARS = env_list("GATEWAY_PROVIDER_KEY_VARS", ["*_API_KEY"])

# --- Security (production) ------------------------------------------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # HSTS for this host only: a year, but neither every subdomain nor the browsers' preload
    # list unless the operator opts in (both are hard to undo; docs/operations.md, TLS).
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    # Off by choice, not by oversight: `check --deploy` stays quiet about them.
    SILENCED_SYSTEM_CHECKS = [
        *([] if SECURE_HSTS_INCLUDE_SUBDOMAINS else ["security.W005"]),
        *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
    ]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {  # query strings redacted in both (logs.py)
            "()": "gateway.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "gateway.logs.JsonFormatter"},  # JSON lines with the request id
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
        }
    },
    "filters": {"api_outcomes": {"()": "gateway.logs.ApiOutcomeFilter"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # 429s and 502s are outcomes the ledger records: INFO, not WARNING/ERROR (logs.py).
        "django.request": {"filters": ["api_outcomes"]},
        # uvicorn's own lines in the same format as ours, once a worker has loaded the app
        # (the Procfile's --log-config covers the lines before that).
        **{
            name: {"handlers": ["console"], "level": "INFO", "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    },
}
if LOG_FORMAT == "json":
    # Python's warnings (a library's deprecation, Celery's root warning) as JSON lines too.
    logging.captureWarnings(True)
# Celery keeps the logging configured above (JSON in production) instead of installing its
# own plain-text handler on the root logger.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
