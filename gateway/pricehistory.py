"""What a model cost on a given day, and the baseline savings are measured against.

A model's prices live on the model (what the gateway charges now); every change appends a
dated `ModelPrice` row (or corrects the row of the same day), so a past request can be
repriced at the price valid on its day. The first row of a model is dated EARLIEST: the
first known price applies to every request before it.

The baseline is "what we would have paid without this gateway": one model, with or without
a response cache, per team with a global default (the row whose team is blank). It is
configured, never guessed from a route's name.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone

from gateway.money import Prices

EARLIEST = dt.date(2000, 1, 1)
PRICE: dict = {"max_digits": 12, "decimal_places": 6, "null": True, "blank": True}
PRICE_ATTRS = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok")


class ModelPrice(models.Model):
    """A model's prices from `valid_from` (a UTC day) until the next row's day."""

    model = models.ForeignKey(
        "gateway.LanguageModel", on_delete=models.CASCADE, related_name="price_history"
    )
    valid_from = models.DateField(help_text="UTC day from which these prices apply.")
    input_per_mtok = models.DecimalField(**PRICE)
    output_per_mtok = models.DecimalField(**PRICE)
    cached_input_per_mtok = models.DecimalField(**PRICE)
    cache_write_per_mtok = models.DecimalField(**PRICE)
    recorded_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "model price (history)"
        verbose_name_plural = "model prices (history)"
        ordering = ["model", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["model", "valid_from"], name="one_price_per_model_day")
        ]

    def __str__(self) -> str:
        return f"{self.model_id} from {self.valid_from}"

    @property
    def prices(self) -> Prices:
        return Prices(
            input=self.input_per_mtok,
            output=self.output_per_mtok,
            cached_input=self.cached_input_per_mtok,
            cache_write=self.cache_write_per_mtok,
        )

    @classmethod
    def record(cls, model) -> None:
        """Append today's row when `model`'s prices differ from the latest row (called on
        every save of a LanguageModel). A second change on the same day corrects that row."""
        wanted = {a: getattr(model, a) for a in PRICE_ATTRS}
        latest = cls.objects.filter(model=model).order_by("-valid_from").first()
        if latest is not None and all(getattr(latest, a) == v for a, v in wanted.items()):
            return
        day = EARLIEST if latest is None else timezone.now().astimezone(dt.UTC).date()
        cls.objects.update_or_create(model=model, valid_from=day, defaults=wanted)


class Baseline(models.Model):
    """The reference savings are measured against: a team's own, else the global default."""

    team = models.OneToOneField(
        "gateway.Team",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="baseline",
        help_text="Blank: the global default, for every team without its own baseline.",
    )
    model = models.ForeignKey(
        "gateway.LanguageModel",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Every request priced as if this model had served it.",
    )
    cache = models.BooleanField(
        default=False,
        help_text="The baseline has a response cache too: cache hits then save nothing "
        "against it. Off (usual): each cache hit is priced at the baseline model.",
    )

    class Meta:
        constraints = [
            # One global default: a blank team counts as team 0.
            models.UniqueConstraint(Coalesce("team", 0), name="one_baseline_per_team"),
        ]

    def __str__(self) -> str:
        who = self.team.name if self.team is not None else "every team (default)"
        return f"{who}: {self.model}{' with cache' if self.cache else ', no cache'}"

    def validate_constraints(self, exclude=None) -> None:
        if self.team_id is None:
            others = Baseline.objects.filter(team__isnull=True).exclude(pk=self.pk)
            if others.exists():
                raise ValidationError("There is already a global default baseline; edit it.")
        super().validate_constraints(exclude=exclude)


@dataclass(frozen=True, slots=True)
class BaselineSnap:
    model: str
    cache: bool


@dataclass(frozen=True)
class PriceHistory:
    """Every model's dated prices, loaded once (a few rows per model) for a report."""

    rows: dict[str, tuple[list[dt.date], list[Prices]]]
    baselines: dict[int | None, BaselineSnap]

    @classmethod
    def load(cls) -> PriceHistory:
        from gateway.models import LanguageModel

        rows: dict[str, tuple[list[dt.date], list[Prices]]] = {}
        history = ModelPrice.objects.select_related("model").order_by("model_id", "valid_from")
        for row in history:
            days, prices = rows.setdefault(row.model.name, ([], []))
            days.append(row.valid_from)
            prices.append(row.prices)
        for m in LanguageModel.objects.exclude(name__in=list(rows)):
            # A model saved without history (bulk writes): its current prices, always.
            rows[m.name] = ([EARLIEST], [Prices(*(getattr(m, a) for a in PRICE_ATTRS))])
        baselines = {
            b.team_id: BaselineSnap(b.model.name, b.cache)
            for b in Baseline.objects.select_related("model")
        }
        return cls(rows, baselines)

    def prices(self, model: str, day: dt.date) -> Prices | None:
        """The prices valid on `day`; None for a model never known."""
        found = self.rows.get(model)
        if found is None:
            return None
        days, prices = found
        return prices[max(bisect_right(days, day) - 1, 0)]

    def baseline(self, team_id: int | None) -> BaselineSnap | None:
        return self.baselines.get(team_id) or self.baselines.get(None)

    def change_days(self) -> list[dt.date]:
        """The days on which a baseline model's prices changed (after its first price),
        sorted: between two of them every baseline prices the same, so a report can sum a
        whole stretch of days before repricing it (reports/savings.py)."""
        days: set[dt.date] = set()
        for baseline in self.baselines.values():
            found = self.rows.get(baseline.model)
            if found is not None:
                days.update(d for d in found[0] if d > EARLIEST)
        return sorted(days)
