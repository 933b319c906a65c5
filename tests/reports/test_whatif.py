"""What-if: the founding scenario's traffic replayed under candidate policies, through the
`whatif` command an operator runs, and counted independently from the ledger rows."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest
import yaml
from django.core.management import CommandError, call_command

from gateway.models import Baseline
from gateway.money import cost_of
from gateway.providers.base import Usage
from reports.templatetags.report_format import usd
from tests.reports.seed_scenario import make_scenario_config, prices, scenario_records
from tests.reports.signin import CSRF, sign_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def scenario(db):
    config = make_scenario_config()
    Baseline.objects.create(model=config["models"]["gpt-4o"])
    return {**config, "records": scenario_records(config["features"])}


def whatif(tmp_path, candidate: dict, *args: str) -> str:
    path = tmp_path / "candidate.yaml"
    path.write_text(yaml.safe_dump(candidate))
    out = io.StringIO()
    call_command("whatif", "--config", str(path), "--since", "30d", *args, stdout=out)
    return out.getvalue()


def answered(records):
    return [r for r in records if r.status == "ok" and r.cache != "hit"]


def at(model: str, records) -> Decimal:
    return sum(
        (cost_of(Usage(r.input_tokens, r.output_tokens), prices(model)).usd for r in records),
        Decimal(0),
    )


def test_a_candidate_that_routes_everything_to_one_model(scenario, tmp_path):
    candidate = {"routes": [{"name": "all", "chain": ["gpt-4o-mini"]}]}
    result = json.loads(whatif(tmp_path, candidate, "--format", "json"))
    records = scenario["records"]
    total = result["total"]
    assert Decimal(total["candidate_usd"]) == at("gpt-4o-mini", answered(records))
    assert Decimal(total["actual_usd"]) == sum((r.cost_usd for r in records), Decimal(0))
    hits = sum(1 for r in records if r.cache == "hit")
    shares = {m["model"]: m["requests"] for m in result["models"]}
    # Failed requests are replayed too (no outage is replayed); refused ones stay refused.
    replayed = [r for r in records if r.cache != "hit" and r.status != "refused"]
    assert shares["gpt-4o-mini"] == len(replayed)
    assert shares["(cache hit)"] == hits
    # Against the baseline (gpt-4o, no cache): every answer and every hit at gpt-4o.
    everything = answered(records) + [r for r in records if r.cache == "hit"]
    assert Decimal(total["baseline_usd"]) == at("gpt-4o", everything)
    assert Decimal(total["vs_baseline_usd"]) < 0


def test_the_candidate_can_move_low_priority_features_to_another_model(scenario, tmp_path):
    candidate = {
        "routes": [
            {"name": "low", "priority": "low", "chain": ["claude-haiku"]},
            {"name": "rest", "chain": ["gpt-4o"]},
        ],
        "priorities": {"platform": "low", "content/translation": "low"},
    }
    result = json.loads(whatif(tmp_path, candidate, "--format", "json"))
    low = {"platform", "content/translation"}

    def is_low(r) -> bool:
        return r.team.name in low or f"{r.team.name}/{r.feature.name}" in low

    records = answered(scenario["records"])
    expected = at("claude-haiku", [r for r in records if is_low(r)])
    expected += at("gpt-4o", [r for r in records if not is_low(r)])
    # Scaled sums are rounded to whole tokens per group, not per request: within a cent.
    assert abs(Decimal(result["total"]["candidate_usd"]) - expected) < Decimal("0.01")
    assert Decimal(result["total"]["candidate_usd"]) > at(
        "claude-haiku", answered(scenario["records"])
    )
    rows = {r["feature"]: r for r in result["rows"]}
    assert rows["platform/moderation"]["candidate_usd"] == str(
        at("claude-haiku", [r for r in records if r.feature.name == "moderation"])
    )


def test_one_team_and_every_format(scenario, tmp_path):
    candidate = {"routes": [{"name": "all", "chain": ["gpt-4o-mini"]}]}
    rows = list(
        csv.reader(io.StringIO(whatif(tmp_path, candidate, "--team", "chat", "--format", "csv")))
    )
    assert rows[0][:3] == ["team", "feature", "requests"]
    assert {r[0] for r in rows[1:-1]} == {"chat"}
    table = whatif(tmp_path, candidate, "--team", "chat")
    assert "chat/search" in table and "Assumptions:" in table and "tokenizers" in table.lower()


def test_token_ratios_scale_tokens_moved_to_another_provider(scenario, tmp_path):
    candidate = {
        "routes": [{"name": "all", "chain": ["claude-haiku"]}],
        "token_ratios": {"anthropic-sim": "1.2"},  # 1.2 Anthropic tokens per OpenAI token
    }
    result = json.loads(whatif(tmp_path, candidate, "--format", "json"))
    expected = Decimal(0)
    for r in answered(scenario["records"]):
        factor = Decimal("1.2") if r.served_model.startswith("gpt") else Decimal(1)
        usage = Usage(
            *(int((n * factor).to_integral_value()) for n in (r.input_tokens, r.output_tokens))
        )
        expected += cost_of(usage, prices("claude-haiku")).usd
    # Scaled sums are rounded to whole tokens per group, not per request: within a cent.
    assert abs(Decimal(result["total"]["candidate_usd"]) - expected) < Decimal("0.01")
    assert Decimal(result["total"]["candidate_usd"]) > at(
        "claude-haiku", answered(scenario["records"])
    )


@pytest.mark.parametrize(
    "candidate, message",
    [
        ({"routes": [{"name": "x", "chain": ["gpt-5"]}]}, "unknown model"),
        ({"routes": []}, "name at least one rule"),
        ({"routes": [{"name": "x", "chain": ["gpt-4o"]}], "oops": 1}, "unknown key"),
        ({"routes": [{"name": "x", "chain": ["gpt-4o"], "priority": "urgent"}]}, "priority"),
    ],
)
def test_a_bad_candidate_is_refused_with_a_clear_message(scenario, tmp_path, candidate, message):
    with pytest.raises(CommandError, match=message):
        whatif(tmp_path, candidate)


def test_the_whatif_page_replays_the_admins_routes_edited(scenario, staff):
    manager = sign_in("boss", "pw-boss-123")
    form = manager.get("/reports/whatif/").content.decode()
    assert "gpt-4o-mini" in form and "name: default" in form  # the admin's routes
    token = CSRF.search(form).group(1)
    candidate = "routes:\n  - {name: all, chain: [gpt-4o-mini]}\n"
    page = manager.post(
        "/reports/whatif/", {"candidate": candidate, "since": "30d", "csrfmiddlewaretoken": token}
    ).content.decode()
    expected = at("gpt-4o-mini", answered(scenario["records"]))
    assert f'id="whatif-candidate">{usd(expected)}<' in page
    assert "Tokenizers differ between providers" in page
    assert "chat/search" in page and "data/search" in page
    bad = manager.post(
        "/reports/whatif/", {"candidate": "routes: [", "since": "30d", "csrfmiddlewaretoken": token}
    )
    assert bad.status_code == 400 and b"not valid YAML" in bad.content


def test_without_a_baseline_the_baseline_figures_are_a_dash_never_zero(scenario, tmp_path):
    Baseline.objects.all().delete()
    candidate = {"routes": [{"name": "all", "chain": ["gpt-4o-mini"]}]}
    total = json.loads(whatif(tmp_path, candidate, "--format", "json"))["total"]
    assert total["baseline_usd"] is None and total["vs_baseline_usd"] is None
    assert total["no_baseline"] > 0
    assert Decimal(total["candidate_usd"]) > 0  # the rest of the replay stands
    table = whatif(tmp_path, candidate)
    assert "requests have no priced baseline" in table
    totals = next(line for line in table.splitlines() if line.startswith("TOTAL"))
    assert totals.split()[4] == "—" and totals.split()[6] == "—"
    # With a baseline on a model without a price: the same.
    from tests.factories import make_model

    unpriced = make_model(
        "mystery", scenario["models"]["gpt-4o"].provider, input_price=None, output_price=None
    )
    Baseline.objects.create(model=unpriced)
    total = json.loads(whatif(tmp_path, candidate, "--format", "json"))["total"]
    assert total["baseline_usd"] is None and total["no_baseline"] > 0
