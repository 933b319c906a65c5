"""Update the prices of known models from the community price table (the format of
LiteLLM's model_prices_and_context_window.json: USD per token, keyed by model id).

Per-token prices such as 1.5e-07 are binary floats once JSON is parsed. They are converted
through their shortest text form (Decimal(str(x)), which is what the table's authors wrote)
and then scaled to USD per million tokens, so 1.5e-07 becomes exactly 0.15.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import transaction

from gateway.models import LanguageModel

MILLION = Decimal(1_000_000)
PRICE_PLACES = 6  # LanguageModel price fields: decimal_places=6

PRICE_KEYS = {
    "input_cost_per_token": "input_per_mtok",
    "output_cost_per_token": "output_per_mtok",
    "cache_read_input_token_cost": "cached_input_per_mtok",
    "cache_creation_input_token_cost": "cache_write_per_mtok",
}
LIMIT_KEYS = {"max_input_tokens": "context_window", "max_output_tokens": "max_output_tokens"}


class PriceTableError(Exception):
    """The price table cannot be read."""


@dataclass(frozen=True)
class Change:
    attr: str
    old: Any
    new: Any


@dataclass(frozen=True)
class ModelUpdate:
    model: LanguageModel
    table_key: str
    changes: tuple[Change, ...]


@dataclass
class PriceReport:
    updates: list[ModelUpdate] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load_price_table(path: str | Path) -> dict[str, dict]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PriceTableError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise PriceTableError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PriceTableError(f"{path}: expected an object keyed by model id")
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def per_million(per_token: Any) -> Decimal | None:
    """USD per token (a JSON number) → USD per million tokens, exact; None if not a price."""
    if isinstance(per_token, bool) or not isinstance(per_token, int | float):
        return None
    value = Decimal(str(per_token)) * MILLION
    if not value.is_finite() or value < 0:
        return None
    value = value.normalize()
    # normalize() writes 150 as 1.5E+2; keep whole numbers whole.
    return value.quantize(Decimal(1)) if _exponent(value) > 0 else value


def _exponent(value: Decimal) -> int:
    """The exponent of a finite Decimal (`as_tuple` also types it as 'n', 'N' or 'F')."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int), "a price is finite"
    return exponent


def import_prices(*, table: dict[str, dict], dry_run: bool = False) -> PriceReport:
    """Compare every model with its table entry and, unless `dry_run`, save what changed."""
    report = PriceReport()
    for model in LanguageModel.objects.select_related("provider"):
        key = _table_key(model, table)
        if key is None:
            report.not_found.append(model.name)
            continue
        changes = _changes(model, table[key], key, report.warnings)
        if changes:
            report.updates.append(ModelUpdate(model, key, tuple(changes)))
        else:
            report.unchanged.append(model.name)
    if not dry_run:
        with transaction.atomic():
            for update in report.updates:
                for change in update.changes:
                    setattr(update.model, change.attr, change.new)
                update.model.save(update_fields=[c.attr for c in update.changes])
    return report


def _table_key(model: LanguageModel, table: dict[str, dict]) -> str | None:
    upstream = model.upstream_id
    for key in (upstream, f"{model.provider.kind}/{upstream}", f"{model.provider.name}/{upstream}"):
        if key in table:
            return key
    return None


def _changes(model: LanguageModel, entry: dict, key: str, warnings: list[str]) -> list[Change]:
    """Only what the table states is compared: a missing cache price leaves ours alone."""
    changes = []
    for table_key, attr in PRICE_KEYS.items():
        if entry.get(table_key) is None:
            continue
        new = per_million(entry[table_key])
        if new is None or -_exponent(new) > PRICE_PLACES:
            warnings.append(
                f"{model.name}: {key}.{table_key} = {entry[table_key]!r} is not a "
                f"price this gateway stores exactly; {attr} left unchanged"
            )
            continue
        old = getattr(model, attr)
        if old is None or old != new:
            changes.append(Change(attr, old, new))
    for table_key, attr in LIMIT_KEYS.items():
        new = entry.get(table_key)
        if isinstance(new, int) and not isinstance(new, bool) and new > 0:
            old = getattr(model, attr)
            if old != new:
                changes.append(Change(attr, old, new))
    return changes
