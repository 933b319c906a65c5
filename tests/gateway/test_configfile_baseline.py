"""`baseline:` in the configuration file: the global default at the top level, a team's own
inside its entry; exported back the same way."""

from __future__ import annotations

import re

import pytest

from gateway.configfile import ConfigFileError, export_config, import_config
from gateway.models import Baseline
from tests.factories import make_model, make_provider

pytestmark = pytest.mark.django_db


@pytest.fixture
def models(db):
    provider = make_provider("sim")
    return make_model("gpt-4o", provider), make_model("gpt-4o-mini", provider)


def test_the_file_sets_a_global_and_a_team_baseline_and_exports_them(models):
    data = {
        "baseline": {"model": "gpt-4o", "cache": False},
        "teams": [{"name": "chat", "baseline": {"model": "gpt-4o-mini", "cache": True}}],
    }
    report = import_config(data)
    assert report.counts["baselines"]["created"] == 2
    assert Baseline.objects.get(team=None).model.name == "gpt-4o"
    chat = Baseline.objects.get(team__name="chat")
    assert (chat.model.name, chat.cache) == ("gpt-4o-mini", True)
    exported = export_config()
    assert exported["baseline"] == {"model": "gpt-4o", "cache": False}
    assert exported["teams"][0]["baseline"] == {"model": "gpt-4o-mini", "cache": True}
    assert import_config(data).counts["baselines"]["unchanged"] == 2


@pytest.mark.parametrize(
    "baseline, message",
    [
        ({"model": "gpt-5"}, "baseline.model: unknown model 'gpt-5'"),
        ({"model": "gpt-4o", "cache": "no"}, "baseline.cache: expected true or false"),
        ({"model": "gpt-4o", "chache": False}, "baseline: unknown key(s) ['chache']"),
        ("gpt-4o", "baseline: expected a mapping"),
    ],
)
def test_a_bad_baseline_is_refused_with_its_place(models, baseline, message):
    with pytest.raises(ConfigFileError, match=re.escape(message)):
        import_config({"baseline": baseline})
    assert not Baseline.objects.exists()
