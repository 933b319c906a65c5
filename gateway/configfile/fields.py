"""How each YAML key maps to a model field: one parser and one default per key.

An entry in the file describes the whole record: a key left out takes its default, so a
file exported from one database and imported into another gives the same records. The
exporter leaves out keys whose value is the default, which keeps files short.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError

from budgets.models import Reservation, default_thresholds
from gateway.models import LanguageModel, RouteRule, Team, validate_drop_params
from gateway.providers import kind_choices


class ConfigFileError(Exception):
    """A mistake in a configuration file; the message names the entry and the key."""


REQUIRED = object()  # a Field default meaning: the key must be present


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigFileError(f"{where}: expected text, got {value!r}")
    return str(value)


def _key_var(value: Any, where: str) -> str:
    """A provider's api_key_env: only a name the operator allows (gateway/keyvars.py)."""
    from gateway import keyvars

    name = _text(value, where)
    try:
        keyvars.check(name)
    except keyvars.KeyVarRefused as exc:
        raise ConfigFileError(f"{where}: {exc}") from None
    return name


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigFileError(f"{where}: expected true or false, got {value!r}")
    return value


def _count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigFileError(f"{where}: expected a whole number ≥ 0, got {value!r}")
    return value


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigFileError(f"{where}: expected a number of seconds > 0, got {value!r}")
    return float(value)


def _usd(value: Any, where: str) -> Decimal | None:
    """Money is Decimal. A YAML number is read through its text (0.15 → "0.15"), never as a
    binary float, so prices written either way give the same exact value."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigFileError(f'{where}: expected an amount in USD such as "0.15", got {value!r}')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigFileError(f"{where}: {value!r} is not an amount in USD") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigFileError(f"{where}: {value!r} is not an amount ≥ 0")
    return amount


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigFileError(
            f"{where}: expected a mapping such as {{latency_ms: 30}}, got {value!r}"
        )
    return value


def _drop_params(value: Any, where: str) -> list[str]:
    try:
        validate_drop_params(value)
    except ValidationError as exc:
        raise ConfigFileError(f"{where}: {' '.join(exc.messages)}") from None
    return list(value)


def _multiple(value: Any, where: str) -> Decimal | None:
    """A price ceiling: how many times the first choice's price, e.g. 5 or "2.5"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigFileError(f'{where}: expected a multiple such as 5 or "2.5", got {value!r}')
    try:
        multiple = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigFileError(f"{where}: {value!r} is not a number") from None
    if not multiple.is_finite() or multiple < 1:
        raise ConfigFileError(f"{where}: {value!r} must be at least 1 (the first choice's price)")
    return multiple


def _percentages(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ConfigFileError(f"{where}: expected a list of percentages such as [50, 80, 100]")
    return value


def _emails(value: Any, where: str) -> str:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigFileError(f"{where}: expected a list of e-mail addresses")
    return "\n".join(v.strip() for v in value if v.strip())


def _dump_emails(value: str) -> list[str]:
    return [e.strip() for e in value.replace(",", "\n").splitlines() if e.strip()]


def _choice(choices: Any) -> Callable[[Any, str], str]:
    """A parser for one of `choices`: a TextChoices class, or a callable giving (value,
    label) pairs (read at parse time, as Django reads callable choices)."""

    def parse(value: Any, where: str) -> str:
        if callable(choices) and not hasattr(choices, "values"):
            allowed = [str(v) for v, _ in choices()]
        else:
            allowed = [str(c) for c in choices.values]
        if value is None:
            value = ""
        if value not in allowed:
            shown = ", ".join(a or '"" (any)' for a in allowed)
            raise ConfigFileError(f"{where}: {value!r} is not one of {shown}")
        return value

    return parse


def dump_decimal(value: Decimal | None) -> str | None:
    """ "0.150000" → "0.15", "5000.0000" → "5000": exact, without exponent."""
    if value is None:
        return None
    return format(value.normalize(), "f")


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Field:
    key: str  # the YAML key
    attr: str  # the model attribute
    parse: Callable[[Any, str], Any]
    default: Any
    dump: Callable[[Any], Any] = _same


PROVIDER_FIELDS = (
    Field("kind", "kind", _choice(kind_choices), REQUIRED),
    Field("base_url", "base_url", _text, ""),
    Field("api_key_env", "api_key_env", _key_var, ""),
    Field("connect_timeout", "connect_timeout", _seconds, 5.0),
    Field("read_timeout", "read_timeout", _seconds, 60.0),
    Field("enabled", "enabled", _flag, True),
    Field("options", "options", _mapping, {}),
)

MODEL_FIELDS = (
    Field("input_per_mtok", "input_per_mtok", _usd, None, dump_decimal),
    Field("output_per_mtok", "output_per_mtok", _usd, None, dump_decimal),
    Field("cached_input_per_mtok", "cached_input_per_mtok", _usd, None, dump_decimal),
    Field("cache_write_per_mtok", "cache_write_per_mtok", _usd, None, dump_decimal),
    Field("context_window", "context_window", _count, 128000),
    Field("max_output_tokens", "max_output_tokens", _count, 4096),
    Field("drop_params", "drop_params", _drop_params, []),
    Field("mode", "mode", _choice(LanguageModel.Mode), LanguageModel.Mode.CHAT.value),
    Field("dimensions", "dimensions", _count, None),
    Field("enabled", "enabled", _flag, True),
)

ROUTE_FIELDS = (
    Field("priority", "priority", _choice(RouteRule.Priority), ""),
    Field("max_prompt_tokens", "max_prompt_tokens", _count, None),
    Field("max_output_tokens", "max_output_tokens", _count, None),
    Field("fallback_ceiling", "fallback_ceiling", _multiple, None, dump_decimal),
    Field("allow_above_ceiling", "allow_above_ceiling", _flag, False),
    Field("enabled", "enabled", _flag, True),
)

TEAM_FIELDS = (
    Field("timezone", "timezone", _text, "UTC"),
    Field("cache_scope", "cache_scope", _choice(Team.CacheScope), Team.CacheScope.TEAM.value),
    Field("budget_fail_open", "budget_fail_open", _flag, False),
    Field("store_content", "store_content", _flag, False),
    Field("rpm_limit", "rpm_limit", _count, None),
    Field("tpm_limit", "tpm_limit", _count, None),
    Field("fallback_ceiling", "fallback_ceiling", _multiple, None, dump_decimal),
)


def _cap(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigFileError(f"{where}: expected a number of output tokens ≥ 1, got {value!r}")
    return value


FEATURE_FIELDS = (
    Field("default_cache_ttl", "default_cache_ttl", _count, 3600),
    # false: only temperature-0 answers are cached (regenerate gets a new answer).
    Field("cache_sampled", "cache_sampled", _flag, True),
    # Left out: the learned cap (or the default) applies. The learned value is not exported.
    Field("output_cap", "output_cap", _cap, None),
)

BUDGET_FIELDS = (
    Field("daily_usd", "daily_limit_usd", _usd, None, dump_decimal),
    Field("monthly_usd", "monthly_limit_usd", _usd, None, dump_decimal),
    Field("alert_at", "alert_thresholds", _percentages, default_thresholds()),
    Field("hard", "hard", _flag, True),
    Field("reservation", "reservation", _choice(Reservation), Reservation.CAP.value),
    Field("emails", "alert_emails", _emails, "", _dump_emails),
    Field("webhook", "webhook_url", _text, ""),
    Field("enabled", "enabled", _flag, True),
)


def parse_fields(entry: dict, fields: tuple[Field, ...], where: str) -> dict[str, Any]:
    """Model attribute → value for every field, defaults filled in."""
    values = {}
    for f in fields:
        if f.key in entry:
            values[f.attr] = f.parse(entry[f.key], f"{where}.{f.key}")
        elif f.default is REQUIRED:
            raise ConfigFileError(f"{where}: `{f.key}` is required")
        else:
            values[f.attr] = copy.deepcopy(f.default)
    return values


def dump_fields(obj: Any, fields: tuple[Field, ...]) -> dict[str, Any]:
    """YAML key → value for every field whose value is not the default."""
    out = {}
    for f in fields:
        value = getattr(obj, f.attr)
        if value != f.default:
            out[f.key] = f.dump(value)
    return out
