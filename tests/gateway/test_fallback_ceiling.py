"""Fallbacks that cannot run up the bill (gateway/ceiling.py), with the scenario's chain
[gpt-4o-mini, gpt-4o, claude-sonnet] through the `openai` SDK while OpenAI is down."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import openai
import pytest
from django.core.management import call_command

from gateway import ceiling, ledger
from gateway.models import UsageRecord
from gateway.money import Prices
from gateway.snapshot import load_snapshot
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_loopback_providers,
    make_model,
    make_route,
    make_team,
    set_fallbacks,
)
from tests.loopback import fail

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "Say hello, please"}]
OUTAGE = (fail(503), fail(503))  # gpt-4o-mini, then gpt-4o: both on the OpenAI that is down


@pytest.fixture
def world(openai_server, anthropic_server, monkeypatch):
    team = make_team("acme", fallback_ceiling=Decimal("20"))
    make_feature(team, "chatbot")
    _, secret = make_key(team)
    oa, an = make_loopback_providers(openai_server, anthropic_server, monkeypatch)
    mini = make_model("gpt-4o-mini", oa, input_price="0.15", output_price="0.60")
    gpt = make_model("gpt-4o", oa, input_price="2.50", output_price="10.00")
    sonnet = make_model("claude-sonnet", an, input_price="3.00", output_price="15.00")
    set_fallbacks(mini, gpt, sonnet)
    return {"team": team, "secret": secret, "chain": [mini, gpt, sonnet]}


def sdk(server, world, **headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "0", **headers},
    )


def record() -> UsageRecord:
    ledger.drain()
    return UsageRecord.objects.get()


def test_price_multiple_is_the_larger_of_the_input_and_output_ratios():
    mini = Prices(Decimal("0.15"), Decimal("0.60"))
    assert ceiling.price_multiple(mini, Prices(Decimal("2.50"), Decimal("10"))) == Decimal(
        "10"
    ) / Decimal("0.60")
    assert ceiling.price_multiple(mini, Prices(Decimal("3"), Decimal("15"))) == 25
    assert ceiling.price_multiple(mini, Prices(None, None)) == ceiling.UNPRICED
    assert ceiling.price_multiple(Prices(None, None), mini) is None  # no reference: no ceiling


def test_the_snapshot_holds_each_chains_skips(world):
    snapshot = load_snapshot()
    skips = snapshot.ceiling_skips[(Decimal("20"), ("gpt-4o-mini", "gpt-4o", "claude-sonnet"))]
    assert skips == {"claude-sonnet": "25.0× the price of gpt-4o-mini; the ceiling is 20×"}


def test_during_the_outage_the_fallback_above_the_ceiling_is_skipped_and_logged(
    gateway_server, world, openai_server, anthropic_server
):
    openai_server.script(*OUTAGE)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(gateway_server, world).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert caught.value.status_code == 502
    assert "claude-sonnet (anthropic): above the fallback price ceiling" in caught.value.message
    assert anthropic_server.requests == []  # never called: nothing spent at Sonnet's price
    log = record().attempt_log
    assert [a["model"] for a in log] == ["gpt-4o-mini", "gpt-4o", "claude-sonnet"]
    assert log[2]["error"] == ceiling.SKIP_ERROR
    assert log[2]["detail"] == "25.0× the price of gpt-4o-mini; the ceiling is 20×"


def test_a_high_priority_request_may_climb_above_the_ceiling(gateway_server, world, openai_server):
    openai_server.script(*OUTAGE)
    raw = sdk(
        gateway_server, world, **{"X-Gateway-Priority": "high"}
    ).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    assert raw.headers["x-gateway-model"] == "claude-sonnet"
    assert record().served_model == "claude-sonnet"


def test_a_fallback_under_the_ceiling_still_rescues(gateway_server, world, openai_server):
    openai_server.script(fail(503))  # only gpt-4o-mini fails; gpt-4o is 16.7×, under 20×
    raw = sdk(gateway_server, world).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO
    )
    assert raw.headers["x-gateway-model"] == "gpt-4o"


@pytest.mark.parametrize(
    "route_settings",
    [{"allow_above_ceiling": True}, {"fallback_ceiling": Decimal("30")}],
    ids=["route-allows-it", "route-ceiling-overrides-the-team"],
)
def test_a_route_may_allow_the_dearer_fallback(
    gateway_server, world, openai_server, route_settings
):
    make_route("catch-all", world["chain"], **route_settings)
    openai_server.script(*OUTAGE)
    raw = sdk(gateway_server, world).chat.completions.with_raw_response.create(
        model="auto", messages=HELLO
    )
    assert raw.headers["x-gateway-model"] == "claude-sonnet"


def test_a_route_with_a_tighter_ceiling_skips_more(gateway_server, world, openai_server):
    make_route("catch-all", world["chain"], fallback_ceiling=Decimal("10"))
    openai_server.script(fail(503))
    with pytest.raises(openai.InternalServerError):
        sdk(gateway_server, world).chat.completions.create(model="auto", messages=HELLO)
    log = record().attempt_log
    assert [a["error"] for a in log[1:]] == [ceiling.SKIP_ERROR, ceiling.SKIP_ERROR]


CONFIG = """
providers:
  - {name: openai, kind: openai}
  - {name: anthropic, kind: anthropic}
models:
  - {name: gpt-4o-mini, provider: openai, input_per_mtok: "0.15", output_per_mtok: "0.6"}
  - {name: gpt-4o, provider: openai, input_per_mtok: "2.5", output_per_mtok: "10"}
  - {name: claude-sonnet, provider: anthropic, input_per_mtok: "3", output_per_mtok: "15"}
routes:
  - {name: catch-all, fallback_ceiling: 20, chain: [gpt-4o-mini, gpt-4o, claude-sonnet]}
teams:
  - name: acme
    fallback_ceiling: "30"
    features: [research-agent]
    budgets:
      - {feature: research-agent, daily_usd: "5", hard: true}
"""


def test_importconfig_warns_of_a_jump_above_the_ceiling_and_a_budget_an_outage_would_eat(
    tmp_path,
):
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    out = StringIO()
    call_command("importconfig", str(path), stdout=out)
    text = out.getvalue()
    assert (
        "Warning: route catch-all: claude-sonnet costs 25.0× the price of gpt-4o-mini; the "
        "ceiling is 20× (for acme); it is skipped as a fallback except for high-priority "
        "requests." in text
    )
    assert "budget of" not in text  # no traffic yet: no hour to price

    # The research agent's busiest hour: 2M input and 400k output tokens on gpt-4o-mini.
    from gateway.models import Feature, Team

    team = Team.objects.get(name="acme")
    agent = Feature.objects.get(name="research-agent")
    from django.utils import timezone

    UsageRecord.objects.create(
        request_id="req_busy",
        created_at=timezone.now(),
        team=team,
        feature=agent,
        input_tokens=2_000_000,
        output_tokens=400_000,
    )
    out = StringIO()
    call_command("importconfig", str(path), stdout=out)
    # gpt-4o is the dearest fallback the route's 20× lets through (claude-sonnet is
    # skipped on that route): $5 + $4 = $9 an hour, over the $5 a day.
    assert (
        "budget of acme/research-agent (daily $5): an hour of outage at gpt-4o's price would "
        "cost about $9.00" in out.getvalue()
    )


def test_a_budget_with_room_for_an_hour_of_outage_is_not_warned_about():
    team = make_team("calm")
    make_budget(team, daily_limit_usd="1000", hard=True)
    from gateway import fallbackcheck

    assert fallbackcheck.outage_budgets(load_snapshot()) == []


def test_the_admin_warns_after_a_team_is_given_a_ceiling_its_chains_jump_over(world, admin_client):
    team = world["team"]
    form = {
        "name": team.name,
        "timezone": "UTC",
        "cache_scope": "team",
        "fallback_ceiling": "20",
        "features-TOTAL_FORMS": "0",
        "features-INITIAL_FORMS": "0",
    }
    saved = admin_client.post(f"/admin/gateway/team/{team.pk}/change/", form, follow=True)
    assert saved.status_code == 200
    warnings = [str(m) for m in saved.context["messages"] if m.level_tag == "warning"]
    assert warnings == [
        "model gpt-4o-mini: claude-sonnet costs 25.0× the price of gpt-4o-mini; the ceiling is "
        "20× (for acme); it is skipped as a fallback except for high-priority requests."
    ]


@pytest.mark.parametrize("ceiling_x, answered", [("20", True), (None, False)], ids=["20x", "none"])
def test_a_hard_budget_holds_nothing_for_a_fallback_the_ceiling_skips(
    gateway_server, world, ceiling_x, answered
):
    """$0.012 a day; max_tokens 1000 holds $0.010 at gpt-4o's output price but $0.015 at
    claude-sonnet's: with the ceiling the request fits, without it it is refused."""
    team = world["team"]
    team.fallback_ceiling = Decimal(ceiling_x) if ceiling_x else None
    team.save()
    make_budget(team, daily_limit_usd="0.012", hard=True)
    call = sdk(gateway_server, world).chat.completions.with_raw_response.create
    if answered:
        assert call(model="gpt-4o-mini", messages=HELLO, max_tokens=1000).http_response.is_success
    else:
        with pytest.raises(openai.RateLimitError):
            call(model="gpt-4o-mini", messages=HELLO, max_tokens=1000)


def test_ceilings_survive_an_export_and_a_reimport():
    import yaml

    from gateway.configfile import export_config, import_config

    import_config(yaml.safe_load(CONFIG))
    exported = export_config()
    (route,) = exported["routes"]
    assert route["fallback_ceiling"] == "20"
    assert exported["teams"][0]["fallback_ceiling"] == "30"
    assert import_config(exported).total("updated") == 0
