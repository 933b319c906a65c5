"""The configuration format: what an import creates, updates and refuses (gateway.configfile)."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml

from budgets.models import Budget
from gateway.configfile import ConfigFileError, export_config, import_config
from gateway.models import Fallback, Feature, LanguageModel, Provider, RouteRule, Team

pytestmark = pytest.mark.django_db

BASE = """
providers:
  - {name: openai, kind: openai, base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
  - {name: anthropic, kind: anthropic, base_url: https://api.anthropic.com, read_timeout: 90}
models:
  - {name: gpt-4o-mini, provider: openai, input_per_mtok: "0.15", output_per_mtok: "0.60",
     context_window: 128000, fallbacks: [claude-haiku]}
  - {name: claude-haiku, provider: anthropic, upstream: claude-3-5-haiku-20241022,
     input_per_mtok: "0.8", output_per_mtok: "4"}
routes:
  - {name: cheap-for-low-priority, priority: low, chain: [gpt-4o-mini, claude-haiku]}
  - {name: default, chain: [claude-haiku]}
teams:
  - name: chatbot
    timezone: Europe/Paris
    rpm_limit: 60
    features: [chatbot, {name: search, default_cache_ttl: 0}]
    budgets:
      - {daily_usd: "200", monthly_usd: "5000", alert_at: [50, 80, 100]}
      - {feature: search, daily_usd: "5", hard: false, emails: [a@example.com],
         webhook: "https://hooks.example.com/x"}
"""


def load(text: str = BASE, **changes) -> dict:
    data = yaml.safe_load(text)
    data.update(changes)
    return data


def test_it_creates_every_record_the_file_names():
    import_config(load())
    model = LanguageModel.objects.get(name="claude-haiku")
    assert model.upstream_id == "claude-3-5-haiku-20241022"
    assert model.provider.read_timeout == 90.0
    assert LanguageModel.objects.get(name="gpt-4o-mini").upstream_id == "gpt-4o-mini"
    assert Feature.objects.get(name="search").default_cache_ttl == 0
    assert Feature.objects.get(name="chatbot").default_cache_ttl == 3600
    team = Team.objects.get(name="chatbot")
    assert (team.timezone, team.rpm_limit) == ("Europe/Paris", 60)
    team_budget = Budget.objects.get(scope=Budget.Scope.TEAM)
    assert (team_budget.daily_limit_usd, team_budget.monthly_limit_usd) == (200, 5000)
    search_budget = Budget.objects.get(feature__name="search")
    assert not search_budget.hard and search_budget.emails == ["a@example.com"]


def test_fallbacks_and_route_chains_keep_the_order_of_the_file():
    import_config(load())
    link = Fallback.objects.get()
    assert (link.model.name, link.target.name, link.position) == ("gpt-4o-mini", "claude-haiku", 0)
    rules = list(RouteRule.objects.all())
    assert [r.name for r in rules] == ["cheap-for-low-priority", "default"]
    assert [s.model.name for s in rules[0].steps.all()] == ["gpt-4o-mini", "claude-haiku"]


def test_a_second_import_updates_a_changed_price_in_place():
    import_config(load())
    report = import_config(load(BASE.replace('"0.60"', '"0.75"')))
    assert LanguageModel.objects.get(name="gpt-4o-mini").output_per_mtok == Decimal("0.75")
    assert report.counts["models"]["updated"] == 1
    assert report.total("created") == 0
    assert LanguageModel.objects.count() == 2


def test_a_changed_budget_limit_updates_the_same_budget():
    import_config(load())
    ids = set(Budget.objects.values_list("id", flat=True))
    import_config(load(BASE.replace('daily_usd: "200"', 'daily_usd: "250"')))
    assert set(Budget.objects.values_list("id", flat=True)) == ids
    assert Budget.objects.get(scope=Budget.Scope.TEAM).daily_limit_usd == Decimal("250")


def test_a_price_written_as_a_yaml_number_is_read_exactly():
    import_config(load(BASE.replace('"0.15"', "0.15").replace('"0.60"', "0.6")))
    model = LanguageModel.objects.get(name="gpt-4o-mini")
    assert model.input_per_mtok == Decimal("0.15") and model.output_per_mtok == Decimal("0.6")


def test_an_edited_fallback_list_replaces_the_stored_one():
    import_config(load())
    import_config(load(BASE.replace("fallbacks: [claude-haiku]", "fallbacks: []")))
    assert not Fallback.objects.exists()


def test_records_the_file_does_not_name_are_left_alone():
    import_config(load())
    Provider.objects.create(name="extra", kind="simulated")
    import_config(load())
    assert Provider.objects.filter(name="extra").exists()


def test_export_writes_prices_as_exact_strings_and_leaves_defaults_out():
    import_config(load())
    data = export_config()
    mini = next(m for m in data["models"] if m["name"] == "gpt-4o-mini")
    assert mini == {
        "name": "gpt-4o-mini",
        "provider": "openai",
        "input_per_mtok": "0.15",
        "output_per_mtok": "0.6",
        "fallbacks": ["claude-haiku"],
    }
    team = data["teams"][0]
    assert team["features"] == ["chatbot", {"name": "search", "default_cache_ttl": 0}]
    assert team["budgets"][1]["feature"] == "search"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "kind: openai,",
            "kind: opanai,",
            r"providers\[0\] \(openai\)\.kind: 'opanai' is not one of",
        ),
        (
            'input_per_mtok: "0.15"',
            'input_price: "0.15"',
            r"models\[0\] \(gpt-4o-mini\): unknown key",
        ),
        (
            '"0.15"',
            '"cheap"',
            r"models\[0\] \(gpt-4o-mini\)\.input_per_mtok: 'cheap' is not an amount",
        ),
        ('"0.15"', '"-1"', r"input_per_mtok: '-1' is not an amount ≥ 0"),
        (
            '"0.15"',
            '"0.1234567"',
            r"models\[0\] \(gpt-4o-mini\): input_per_mtok: .*6 decimal places",
        ),
        (
            "fallbacks: [claude-haiku]",
            "fallbacks: [claude-hiaku]",
            r"models\[0\] \(gpt-4o-mini\)\.fallbacks: unknown model\(s\) \['claude-hiaku'\]",
        ),
        ("fallbacks: [claude-haiku]", "fallbacks: [gpt-4o-mini]", "cannot fall back to itself"),
        (
            "chain: [claude-haiku]",
            "chain: []",
            r"routes\[1\] \(default\)\.chain: name at least one",
        ),
        ("priority: low", "priority: urgent", r"routes\[0\] .*\.priority: 'urgent' is not one of"),
        (
            "Europe/Paris",
            "Mars/Olympus",
            r"teams\[0\] \(chatbot\): timezone: 'Mars/Olympus' is not",
        ),
        (
            "feature: search",
            "feature: nope",
            r"budgets\[1\]\.feature: chatbot has no feature 'nope'",
        ),
        ('"https://hooks.example.com/x"', "not-a-url", r"budgets\[1\]: webhook: Enter a valid URL"),
        (
            "alert_at: [50, 80, 100]",
            "alert_at: [50, 80.5]",
            r"budgets\[0\]\.alert_at: expected a list",
        ),
        (
            "rpm_limit: 60",
            "rpm_limit: lots",
            r"teams\[0\] \(chatbot\)\.rpm_limit: expected a whole",
        ),
        ("name: default,", "name: cheap-for-low-priority,", "appears twice in routes"),
    ],
)
def test_a_mistake_is_refused_with_the_entry_and_key_named(old, new, message):
    assert old in BASE
    with pytest.raises(ConfigFileError, match=message):
        import_config(load(BASE.replace(old, new)))


def test_a_mistake_late_in_the_file_imports_nothing():
    with pytest.raises(ConfigFileError):
        import_config(load(BASE.replace("Europe/Paris", "Mars/Olympus")))
    assert not Provider.objects.exists()
    assert not LanguageModel.objects.exists()
    assert not Team.objects.exists()


def test_a_model_needs_a_known_provider_and_a_provider_a_kind():
    with pytest.raises(ConfigFileError, match=r"providers\[0\] \(x\): `kind` is required"):
        import_config({"providers": [{"name": "x"}]})
    with pytest.raises(ConfigFileError, match=r"entries"):
        import_config({"models": {"name": "x"}})


def test_drop_params_are_read_written_and_checked():
    text = BASE.replace('output_per_mtok: "4"}', 'output_per_mtok: "4", drop_params: [seed]}')
    import_config(load(text))
    assert LanguageModel.objects.get(name="claude-haiku").drop_params == ["seed"]
    haiku = next(m for m in export_config()["models"] if m["name"] == "claude-haiku")
    assert haiku["drop_params"] == ["seed"]
    mini = next(m for m in export_config()["models"] if m["name"] == "gpt-4o-mini")
    assert "drop_params" not in mini  # the default (nothing dropped) is left out
    with pytest.raises(ConfigFileError, match=r"drop_params: Unknown parameter\(s\) sed"):
        import_config(load(text.replace("[seed]", "[sed]")))


def test_an_embedding_model_is_read_and_written_with_its_mode_and_dimensions():
    text = BASE.replace(
        "routes:",
        "  - {name: embed-small, provider: openai, upstream: text-embedding-3-small,\n"
        '     mode: embedding, dimensions: 1536, input_per_mtok: "0.02", output_per_mtok: "0"}\n'
        "routes:",
    )
    import_config(load(text))
    model = LanguageModel.objects.get(name="embed-small")
    assert (model.mode, model.dimensions) == ("embedding", 1536)
    assert LanguageModel.objects.get(name="gpt-4o-mini").mode == "chat"  # the default
    exported = {m["name"]: m for m in export_config()["models"]}
    assert (exported["embed-small"]["mode"], exported["embed-small"]["dimensions"]) == (
        "embedding",
        1536,
    )
    assert "mode" not in exported["gpt-4o-mini"]  # the default (chat) is left out
    with pytest.raises(ConfigFileError, match="mode: 'embeddings' is not one of chat, embedding"):
        import_config(load(text.replace("mode: embedding", "mode: embeddings")))
