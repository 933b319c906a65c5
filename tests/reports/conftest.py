"""Ledger rows written directly (tests only: in the product the gateway's drainer writes
them) and a staff reader."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from gateway.models import UsageRecord
from reports import rollups
from tests.factories import make_feature, make_model, make_provider, make_team

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
    return User.objects.create_user("boss", password="pw-boss-123", is_staff=True)


@pytest.fixture
def managers_group(db) -> Group:
    return Group.objects.get_or_create(name="managers")[0]
