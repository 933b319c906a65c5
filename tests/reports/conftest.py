"""Ledger rows written directly (tests only: in the product the gateway's drainer writes
them) and a staff reader."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.utils import timezone

from gateway.models import UsageRecord
from reports import rollups
from tests.factories import (
    make_budget,
    make_feature,
    make_model,
    make_provider,
    make_route,
    make_team,
    set_fallbacks,
)

_ids = itertools.count()


def make_record(team, feature=None, **kw) -> UsageRecord:
    """An unsaved ledger row with sensible defaults."""
    kw.setdefault("created_at", timezone.now() - dt.timedelta(minutes=5))
    kw.setdefault("served_model", "small")
    kw.setdefault("requested_model", kw["served_model"])
    kw.setdefault("provider", "sim")
    kw.setdefault("attempts", 1)
    kw.setdefault("input_tokens", 100)
    kw.setdefault("output_tokens", 50)
    kw.setdefault("latency_ms", 120)
    for money in ("cost_usd", "saved_usd"):
        kw[money] = Decimal(str(kw.get(money, "0")))
    return UsageRecord(request_id=f"req-{next(_ids)}", team=team, feature=feature, **kw)


def write_ledger(records: list[UsageRecord]) -> list[UsageRecord]:
    """What the drainer does: insert the batch and roll it up in one transaction."""
    from django.db import transaction

    with transaction.atomic():
        UsageRecord.objects.bulk_create(records)
        rollups.apply(records)
    return records


@pytest.fixture(autouse=True)
def _report_settings(settings):
    # Users are created in most tests here; the default hasher is slow on purpose.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Outside the embedded mode production settings redirect http to https; these tests are
    # about the reports' own answers (and run over plain http against the live server).
    settings.SECURE_SSL_REDIRECT = False


@pytest.fixture
def world(db):
    """Two teams with features and two priced models on one simulated provider."""
    provider = make_provider("sim")
    small = make_model("small", provider, input_price="1", output_price="2")
    large = make_model("large", provider, input_price="10", output_price="30")
    acme, globex = make_team("acme"), make_team("globex")
    return {
        "provider": provider,
        "small": small,
        "large": large,
        "acme": acme,
        "globex": globex,
        "acme_chat": make_feature(acme, "chatbot"),
        "acme_search": make_feature(acme, "search"),
        "globex_chat": make_feature(globex, "chatbot"),
    }


@pytest.fixture
def staff(db) -> User:
    """Staff who may read every team's reports (the view_all_teams permission)."""
    user = User.objects.create_user("boss", password="pw-boss-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_all_teams"))
    return user


@pytest.fixture
def scenario(db) -> dict:
    """The founding scenario's world (tests/reports/seed_scenario.py) and this month's 400
    requests, measured against gpt-4o without a cache."""
    from gateway.models import Baseline
    from tests.reports.seed_scenario import make_scenario_config, scenario_records

    config = make_scenario_config()
    Baseline.objects.create(model=config["models"]["gpt-4o"], cache=False)
    return {**config, "records": scenario_records(config["features"])}


@pytest.fixture
def manager(staff):
    """The staff reader, signed in through the dashboards' login form."""
    from tests.reports.signin import sign_in

    return sign_in("boss", "pw-boss-123")


@pytest.fixture
def managers_group(db) -> Group:
    return Group.objects.get_or_create(name="managers")[0]


DEMO_FEATURES = (
    "chatbot",
    "summarization",
    "code-generation",
    "moderation",
    "search",
    "classification",
    "translation",
    "data-extraction",
)


def make_demo_config() -> None:
    """Providers, models, routes, teams, features and budgets shaped like the demo's."""
    openai, anthropic = make_provider("sim-openai"), make_provider("sim-anthropic")
    local = make_provider("sim-local")
    mini = make_model("gpt-4o-mini", openai, input_price="0.15", output_price="0.6")
    gpt4o = make_model("gpt-4o", openai, input_price="2.5", output_price="10")
    haiku = make_model("claude-3-5-haiku", anthropic, input_price="0.8", output_price="4")
    sonnet = make_model("claude-sonnet-4", anthropic, input_price="3", output_price="15")
    llama = make_model("llama-3.1-8b", local, input_price="0.03", output_price="0.05")
    set_fallbacks(mini, haiku)
    set_fallbacks(gpt4o, sonnet)
    set_fallbacks(llama, mini)
    make_route("cheap-for-low-priority", [llama, mini], priority="low", position=0)
    make_route("strong-for-high-priority", [sonnet, gpt4o], priority="high", position=1)
    make_route("default", [gpt4o, sonnet], position=2)
    product, platform = make_team("product"), make_team("platform")
    for name in DEMO_FEATURES:
        make_feature(product, name)
    for name in ("moderation", "classification", "data-extraction"):
        make_feature(platform, name)
    make_budget(product, daily_limit_usd="20", monthly_limit_usd="300")
    make_budget(platform, monthly_limit_usd="20", alert_thresholds=[80, 100])
