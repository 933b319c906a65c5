"""`importprices`: exact per-million prices from the community price table, for known models."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from gateway.models import LanguageModel
from gateway.priceimport import load_price_table, per_million
from tests.factories import make_model, make_provider

pytestmark = pytest.mark.django_db

SMALL = Path(__file__).resolve().parents[1] / "data" / "prices_small.json"
SNAPSHOT = (
    Path(settings.BASE_DIR).parent / "shared" / "data" / "model_prices_and_context_window.json"
)


def run(*args) -> str:
    out = io.StringIO()
    call_command("importprices", *args, stdout=out, stderr=out)
    return out.getvalue()


@pytest.fixture
def models():
    openai = make_provider("openai", kind="openai", base_url="https://api.openai.com/v1")
    anthropic = make_provider("anthropic", kind="anthropic", base_url="https://api.anthropic.com")
    return {
        "mini": make_model(
            "gpt-4o-mini",
            openai,
            input_price="0.2",
            output_price="0.6",
            context_window=100000,
            max_output_tokens=16384,
        ),
        "gpt41": make_model(
            "gpt-4.1",
            openai,
            input_price="2",
            output_price="8",
            cached_input_per_mtok=Decimal("0.5"),
            context_window=1047576,
            max_output_tokens=32768,
        ),
        "sonnet": make_model(
            "sonnet",
            anthropic,
            upstream_id="claude-sonnet-4-5",
            input_price=None,
            output_price=None,
        ),
        "odd": make_model(
            "odd", openai, upstream_id="odd-model", input_price="1", output_price="2"
        ),
        "local": make_model("llama", openai, upstream_id="not-in-any-table"),
    }


@pytest.mark.parametrize(
    ("per_token", "expected"),
    [
        (1.5e-07, "0.15"),
        (6e-07, "0.6"),
        (7.5e-08, "0.075"),
        (3.75e-06, "3.75"),
        (1.5e-05, "15"),
        (0.0, "0"),
        (2.5e-08, "0.025"),
    ],
)
def test_per_token_floats_become_exact_per_million_decimals(per_token, expected):
    assert str(per_million(per_token)) == expected


def test_it_updates_changed_prices_and_reports_old_and_new(models):
    out = run(str(SMALL))
    mini = LanguageModel.objects.get(name="gpt-4o-mini")
    assert mini.input_per_mtok == Decimal("0.15")
    assert mini.cached_input_per_mtok == Decimal("0.075")
    assert mini.context_window == 128000
    assert "gpt-4o-mini (table entry gpt-4o-mini):" in out
    assert "input_per_mtok: 0.2 → 0.15" in out
    assert "cached_input_per_mtok: unset → 0.075" in out
    assert "context_window: 100000 → 128000" in out
    assert "Updated 3 model(s)." in out


def test_it_matches_a_provider_prefixed_table_key(models):
    LanguageModel.objects.filter(name="gpt-4.1").update(output_per_mtok=Decimal("9"))
    out = run(str(SMALL))
    assert "gpt-4.1 (table entry openai/gpt-4.1):" in out
    assert "output_per_mtok: 9 → 8" in out
    assert LanguageModel.objects.get(name="gpt-4.1").output_per_mtok == Decimal("8")


def test_it_prices_an_unpriced_model_by_its_upstream_id(models):
    run(str(SMALL))
    sonnet = LanguageModel.objects.get(name="sonnet")
    assert (sonnet.input_per_mtok, sonnet.output_per_mtok) == (Decimal("3"), Decimal("15"))
    assert sonnet.cache_write_per_mtok == Decimal("3.75")
    assert sonnet.max_output_tokens == 64000


def test_it_leaves_models_missing_from_the_table_alone(models):
    out = run(str(SMALL))
    assert "Not in the table (left as they are): llama" in out
    assert LanguageModel.objects.get(name="llama").input_per_mtok == Decimal("1")


def test_it_refuses_a_price_it_cannot_store_exactly(models):
    out = run(str(SMALL))
    odd = LanguageModel.objects.get(name="odd")
    assert odd.input_per_mtok == Decimal("1")  # 15.000020000000002 needs 15 decimals
    assert odd.output_per_mtok == Decimal("75")
    assert "odd-model.input_cost_per_token" in out and "left unchanged" in out


def test_a_dry_run_reports_but_saves_nothing(models):
    out = run(str(SMALL), "--dry-run")
    assert "input_per_mtok: 0.2 → 0.15" in out
    assert "Dry run: 3 model(s) would change; nothing was saved." in out
    assert LanguageModel.objects.get(name="gpt-4o-mini").input_per_mtok == Decimal("0.2")
    assert LanguageModel.objects.get(name="sonnet").input_per_mtok is None


def test_a_second_import_changes_nothing(models):
    run(str(SMALL))
    out = run(str(SMALL))
    assert "Updated 0 model(s)." in out


def test_a_missing_or_broken_table_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        run(str(tmp_path / "absent.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CommandError, match="not valid JSON"):
        run(str(broken))


@pytest.mark.skipif(not SNAPSHOT.exists(), reason="the shared price snapshot is not checked out")
def test_the_real_snapshot_prices_the_shipped_openai_models():
    call_command(
        "importconfig",
        str(Path(settings.BASE_DIR) / "gateway/defaults/config.yaml"),
        stdout=io.StringIO(),
    )
    out = run(str(SNAPSHOT), "--dry-run")
    assert "Dry run:" in out
    table = load_price_table(SNAPSHOT)
    shipped_openai = LanguageModel.objects.filter(provider__name="openai")
    assert shipped_openai.count() >= 5
    for model in shipped_openai:
        assert model.upstream_id in table, model.name
    mini = LanguageModel.objects.get(name="gpt-4o-mini")
    assert mini.input_per_mtok == per_million(table["gpt-4o-mini"]["input_cost_per_token"])
    assert mini.output_per_mtok == per_million(table["gpt-4o-mini"]["output_cost_per_token"])
