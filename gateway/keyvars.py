"""Which environment variables a Provider may name as its `api_key_env`.

A provider sends the value of the variable it names to its `base_url` as a Bearer token (or
`x-api-key`). Whoever may edit providers could otherwise point one at a host they control
and name `SECRET_KEY` or `DATABASE_URL`: the gateway would send them the secret. So:

- an operator allows names with `GATEWAY_PROVIDER_KEY_VARS`: comma-separated glob patterns
  (`fnmatch`, case-sensitive), default `*_API_KEY`;
- a hard DENIED list that no pattern can allow: Django's and the infrastructure's settings,
  and every variable `gatewaysite/settings.py` itself reads (`settings.ENV_VARS_READ`).

Checked in one place, here, by the admin form and the model's `clean`, by `importconfig`,
and at run time when the snapshot reads the variable: a row written before this check, or
by SQL, never sends a refused variable's value anywhere (`provider_key`).
"""

from __future__ import annotations

import logging
import os
import re
from fnmatch import fnmatchcase

from django.conf import settings

from gateway.process import state

log = logging.getLogger("gateway.keyvars")

DEFAULT_PATTERNS = ("*_API_KEY",)

# Never a provider key, whatever GATEWAY_PROVIDER_KEY_VARS says (glob patterns).
DENIED = (
    "SECRET_KEY",
    "*SECRET_KEY*",
    "DATABASE_URL",
    "*DATABASE*",
    "REDIS_URL",
    "*REDIS*",
    "CELERY_*",
    "DJANGO_*",
    "AWS_*",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_*",
    "MANAGER_PASSWORD",
    "ADMIN_PASSWORD",
    "*PASSWORD*",
    "STATIC_*",
    "EMAIL_*",
    "METRICS_TOKEN",
    "PROMETHEUS_*",
    "SECURE_*",
    "SESSION_*",
    "CSRF_*",
    "ALLOWED_HOSTS",
    "DEBUG",
    "SQLITE_PATH",
    "PATH",
    "HOME",
    "USER",
    "PYTHON*",
    "LD_*",
    "SSH_*",
)

# What a variable name may look like at all (POSIX-ish): no spaces, no `=`, no NUL.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class KeyVarRefused(ValueError):
    """The name may not be used as a provider key; the message says why and what to do."""


def allowed_patterns() -> tuple[str, ...]:
    raw = getattr(settings, "GATEWAY_PROVIDER_KEY_VARS", None)
    if raw is None:
        return DEFAULT_PATTERNS
    if isinstance(raw, str):
        raw = raw.split(",")
    return tuple(p.strip() for p in raw if p.strip())


def _denied(name: str) -> bool:
    upper = name.upper()
    if upper in {n.upper() for n in getattr(settings, "ENV_VARS_READ", ())}:
        return True
    return any(fnmatchcase(upper, pattern) for pattern in DENIED)


def check(name: str) -> None:
    """Raise KeyVarRefused unless `name` may be a provider's `api_key_env` ("" is fine:
    no key)."""
    if name == "":
        return
    if not _NAME.fullmatch(name):
        raise KeyVarRefused(
            f"{name!r} is not an environment variable name (letters, digits and _ only)."
        )
    if _denied(name):
        raise KeyVarRefused(
            f"{name} holds one of the gateway's own settings or an infrastructure secret; "
            "it can never be sent to a provider. Put the provider's key in its own variable, "
            "e.g. OPENAI_API_KEY."
        )
    patterns = allowed_patterns()
    if not any(fnmatchcase(name, p) for p in patterns):
        shown = ", ".join(patterns) or "(none)"
        raise KeyVarRefused(
            f"{name} is not allowed as a provider key variable: the operator allows "
            f"{shown} (GATEWAY_PROVIDER_KEY_VARS)."
        )


def is_allowed(name: str) -> bool:
    try:
        check(name)
    except KeyVarRefused:
        return False
    return True


def provider_key(provider: str, name: str) -> tuple[str, str]:
    """(the key, "") for an allowed variable; ("", why) for a refused one, whose value is
    never read. Logged at ERROR: a refused name in the database is an operator's problem."""
    if not name:
        return "", ""
    try:
        check(name)
    except KeyVarRefused as exc:
        logged = state().refused_key_vars  # once per process, not at every refresh
        if (provider, name) not in logged:
            logged.add((provider, name))
            log.error("provider %s: api_key_env refused, its calls fail: %s", provider, exc)
        return "", f"{provider}: api_key_env refused ({exc})"
    return provider_secret(name), ""


def provider_secret(env_name: str) -> str:
    """A provider's key: the content of the file named by `<env_name>_FILE` when that is set
    (read at each snapshot load, so a key rotated in the file reaches every process within
    GATEWAY["CONFIG_TTL_S"] plus one refresh, with no restart), else `<env_name>` itself."""
    if not env_name:
        return ""
    path = os.environ.get(f"{env_name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as secret:
                return secret.read().strip()
        except OSError as exc:  # keep serving: the variable, if set, is the fallback
            log.warning("cannot read %s_FILE (%s): %s", env_name, path, type(exc).__name__)
    return os.environ.get(env_name, "")
