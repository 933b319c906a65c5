"""`python -m tests.reports.login_world`: the sign-in tests' world, written in the site
server's own environment: the demo's two teams (`product`, `platform`), each with today's
spend in the ledger and its rollups. Managers are then created with `createmanager`, as an
operator would."""

from __future__ import annotations

import os

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
    django.setup()
    from gateway.models import Team
    from tests.reports.conftest import make_demo_config, make_record, write_ledger

    make_demo_config()
    product, platform = Team.objects.get(name="product"), Team.objects.get(name="platform")
    write_ledger(
        [
            make_record(product, product.features.get(name="chatbot"), cost_usd="1.25"),
            make_record(platform, platform.features.get(name="moderation"), cost_usd="7.5"),
        ]
    )


if __name__ == "__main__":
    main()
