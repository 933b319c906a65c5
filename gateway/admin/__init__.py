"""The admin: every record an operator edits, in words a non-developer understands.

API key secrets are shown once, on the page that follows creation, and never stored: only
their hash and a short prefix are. Provider secrets are never in the database at all: a
provider names the environment variable that holds its key, and the admin shows only
whether that variable is set in this process.

One module per group of records: common (labels, warnings), teams, keys, catalog (providers,
models, routes) and ledger (usage records, dead letters).
"""

from django.contrib import admin

from gateway.admin import catalog, common, keys, ledger, teams
from gateway.admin.common import show_fallback_warnings
from gateway.admin.keys import FeatureSelect

admin.site.site_header = "LLM gateway"
admin.site.site_title = "LLM gateway admin"
admin.site.index_title = "Teams, keys, providers, models, routes, budgets and usage"

__all__ = [
    "FeatureSelect",
    "catalog",
    "common",
    "keys",
    "ledger",
    "show_fallback_warnings",
    "teams",
]
