"""Budgets with their live spend beside each limit, and the read-only record of alerts."""

from __future__ import annotations

import logging

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from redis.exceptions import RedisError

from budgets.keys import budget_keys
from budgets.models import Budget, BudgetAlert, default_thresholds, validate_thresholds
from budgets.windows import current_windows
from gateway.admin import FeatureSelect, show_fallback_warnings
from gateway.models import Feature
from gateway.money import format_usd, units_to_usd
from gateway.runtime import read_many

log = logging.getLogger(__name__)

UNAVAILABLE = "Redis unavailable"


def live_spend(budgets: list[Budget]) -> dict[int, tuple[str, str]]:
    """Each budget's spend today and this month (its team's time zone), as USD text, with
    what requests in flight hold beside it ("$1.20 + $0.30 reserved").

    One MGET for the whole page; if Redis is down every cell says so instead of failing.
    """
    keys = []
    for b in budgets:
        for window in current_windows(b.team.timezone):
            k = budget_keys(b.team_id, b.pk, window.key)
            keys += [k.spent, k.reserved]
    if not keys:
        return {}
    try:
        values = read_many(keys)
    except RedisError as exc:
        log.warning("live budget spend unavailable: %s", exc)
        return {b.pk: (UNAVAILABLE, UNAVAILABLE) for b in budgets}
    cells = [
        _spend_cell(int(values[i] or 0), int(values[i + 1] or 0)) for i in range(0, len(values), 2)
    ]
    return {b.pk: (cells[2 * i], cells[2 * i + 1]) for i, b in enumerate(budgets)}


def _spend_cell(spent: int, reserved: int) -> str:
    text = "$" + format_usd(units_to_usd(spent))
    if reserved > 0:
        text += f" + ${format_usd(units_to_usd(reserved))} reserved"
    return text


def _limit(value) -> str:
    return "—" if value is None else f"${format_usd(value)}"


class ThresholdsField(forms.CharField):
    """Alert thresholds typed the way people write them, "50, 80, 100" (a "%" or brackets
    are fine too), stored as the list of whole percentages the model keeps."""

    default_error_messages = {
        "invalid": "Type whole percentages separated by commas, e.g. 80, 100.",
    }

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return value

    def to_python(self, value):
        text = (super().to_python(value) or "").strip().strip("[]")
        parts = [p.strip().rstrip("%").strip() for p in text.split(",")]
        parts = [p for p in parts if p]
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise ValidationError(self.error_messages["invalid"], code="invalid") from None
        validate_thresholds(numbers)  # each one 1..1000 (a limit may be passed 10 times)
        return sorted(set(numbers))


class BudgetForm(forms.ModelForm):
    webhook_url = forms.URLField(
        label="Alert webhook URL",
        required=False,
        assume_scheme="https",
        help_text="A JSON POST (Slack incoming webhooks accept it).",
    )
    alert_thresholds = ThresholdsField(
        label="Alert thresholds (%)",
        initial=default_thresholds,
        help_text="Percentages of each limit that send an alert, separated by commas, e.g. "
        "50, 80, 100.",
    )

    class Meta:
        model = Budget
        fields = [
            "scope",
            "team",
            "feature",
            "hard",
            "reservation",
            "enabled",
            "daily_limit_usd",
            "monthly_limit_usd",
            "alert_thresholds",
            "alert_emails",
            "webhook_url",
        ]
        labels = {
            "daily_limit_usd": "Daily limit (USD)",
            "monthly_limit_usd": "Monthly limit (USD)",
            "alert_emails": "Alert e-mails",
            "webhook_url": "Alert webhook URL",
            "hard": "Hard (refuses requests)",
        }
        widgets = {"feature": FeatureSelect}

    class Media:
        js = ("gateway/apikey_form.js",)  # the feature list follows the chosen team


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    form = BudgetForm
    list_display = [
        "__str__",
        "team",
        "hard",
        "reservation",
        "spent_today",
        "daily_limit",
        "spent_this_month",
        "monthly_limit",
        "enabled",
    ]
    list_filter = ["hard", "reservation", "enabled", "scope", "team"]
    list_select_related = ["team", "feature", "feature__team"]
    fieldsets = [
        (None, {"fields": ["scope", "team", "feature", "hard", "reservation", "enabled"]}),
        ("Limits (USD)", {"fields": ["daily_limit_usd", "monthly_limit_usd"]}),
        ("Alerts", {"fields": ["alert_thresholds", "alert_emails", "webhook_url"]}),
    ]

    def save_related(self, request, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # Could this budget pay for an hour of outage at the fallback's price?
        show_fallback_warnings(request, f"budget of {form.instance.team.name}")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "feature":
            kwargs["queryset"] = Feature.objects.select_related("team")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        spend = live_spend(list(changelist.result_list))
        for budget in changelist.result_list:
            budget.live = spend.get(budget.pk, ("—", "—"))
        return changelist

    @admin.display(description="spent today")
    def spent_today(self, obj: Budget) -> str:
        return getattr(obj, "live", ("—", "—"))[0]

    @admin.display(description="daily limit")
    def daily_limit(self, obj: Budget) -> str:
        return _limit(obj.daily_limit_usd)

    @admin.display(description="spent this month")
    def spent_this_month(self, obj: Budget) -> str:
        return getattr(obj, "live", ("—", "—"))[1]

    @admin.display(description="monthly limit")
    def monthly_limit(self, obj: Budget) -> str:
        return _limit(obj.monthly_limit_usd)


@admin.register(BudgetAlert)
class BudgetAlertAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "budget",
        "window",
        "window_key",
        "threshold",
        "channel",
        "status",
        "attempt",
        "spend_usd",
        "limit_usd",
    ]
    list_filter = ["status", "channel", "window"]
    list_select_related = ["budget__team", "budget__feature__team"]
    search_fields = ["error", "window_key"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
