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

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
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
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_list(name: str, default: list[str]) -> list[str]:
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
    "gateway.loginguard.LoginRateLimitMiddleware",  # 5 failed admin logins / 15 min → 429
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
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL or "redis://embedded:6379/0",
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
LOGIN_URL = "/admin/login/"

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
CELERY_BROKER_URL = CELERY_BROKER_URL or "memory://"
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


def _every(seconds: float, task: str) -> dict:
    # A run that waited longer than most of its interval (the worker was down) is dropped:
    # the next one does the same work, so a backlog never piles up in the broker.
    return {"task": task, "schedule": seconds, "options": {"expires": seconds * 0.8}}


CELERY_BEAT_SCHEDULE = {
    "drain-ledger": _every(5.0, "gateway.tasks.drain_ledger"),
    "reconcile-budget-counters": _every(300.0, "budgets.tasks.reconcile_counters"),
    "roll-up-usage": _every(60.0, "reports.tasks.roll_up_recent"),
    "daily-spend-digest": {
        "task": "budgets.tasks.send_daily_digests",
        "schedule": crontab(minute=0, hour=DIGEST_HOUR_UTC),
        "options": {"expires": 12 * 3600},
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
GATEWAY = {
    # Largest request body accepted by /v1/chat/completions, in bytes (413 beyond).
    "MAX_BODY_BYTES": env_int("GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024),
    # Overall deadline for one request across every fallback attempt, in seconds (504 beyond).
    "REQUEST_DEADLINE_S": env_float("GATEWAY_REQUEST_DEADLINE_S", 120.0),
    # How long a process trusts its copy of keys, models and routes. This is the bound on how
    # long a revoked key or an edited price can still be seen by another process.
    "CONFIG_TTL_S": env_float("GATEWAY_CONFIG_TTL_S", 5.0),
    "CIRCUIT_FAILURES": env_int("GATEWAY_CIRCUIT_FAILURES", 5),
    "CIRCUIT_COOLDOWN_S": env_int("GATEWAY_CIRCUIT_COOLDOWN_S", 30),
    "DEFAULT_CACHE_TTL_S": env_int("GATEWAY_DEFAULT_CACHE_TTL_S", 3600),
    # How long a budget reservation lives if its process dies before settling it.
    "RESERVATION_TTL_S": env_int("GATEWAY_RESERVATION_TTL_S", 300),
    # Run the ledger drainer inside the web process (always true in the embedded demo).
    "LEDGER_IN_PROCESS": env_bool("GATEWAY_LEDGER_IN_PROCESS", True),
    "LEDGER_FLUSH_INTERVAL_S": env_float("GATEWAY_LEDGER_FLUSH_INTERVAL_S", 0.5),
    # Seconds between SIGTERM and uvicorn's shutdown, while /readyz answers 503 so the load
    # balancer stops sending (gateway/drain.py). Make it longer than the load balancer's
    # health check interval x its unhealthy threshold.
    "DRAIN_S": env_float("GATEWAY_DRAIN_S", 0.0 if DEBUG else 10.0),
}

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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "gateway.logs.JsonFormatter"},  # JSON lines with the request id
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": env_str("LOG_FORMAT", "plain" if DEBUG else "json"),
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
if LOGGING["handlers"]["console"]["formatter"] == "json":
    # Python's warnings (a library's deprecation, Celery's root warning) as JSON lines too.
    logging.captureWarnings(True)
# Celery keeps the logging configured above (JSON in production) instead of installing its
# own plain-text handler on the root logger.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
