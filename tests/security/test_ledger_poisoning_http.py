"""Issue 16, critical, as the attack was made: over HTTP against the served app (uvicorn,
PostgreSQL, Redis, the web process draining its own ledger), one key's requests whose records
PostgreSQL refuses — a model name with a NUL byte, a NUL in the stored content of a team that
keeps prompts, an upstream reporting `prompt_tokens: 10**15` — are followed by other teams'
ordinary requests. Before: the drain retried the poisoned batch every 0.5 s and no later record
of any team landed. Now every other team's record lands, the queue empties, and each of the
attacker's requests is accounted for (in the ledger, or as a dead letter). Whether the edge
refuses the NUL or the usage check refuses the count first does not change what is asserted.
"""

from __future__ import annotations

import httpx
import pytest

from gateway import ledger
from gateway.models import DeadLetter, UsageRecord
from tests.factories import make_feature, make_key, make_model, make_provider, make_team
from tests.loopback import ok
from tests.processes import requires_postgres, requires_real_redis, wait_for

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]


def test_one_keys_poisoned_records_do_not_stop_the_ledger_for_other_teams(openai_server, gateways):
    provider = make_provider(
        "openai",
        kind="openai",
        base_url=openai_server.base_url,
        api_key_env="TEST_OPENAI_API_KEY",
        options={},
    )
    make_model("gpt-4o", provider, input_price="2.5", output_price="10")
    keys = {}
    for name in ("attacker", "alpha", "beta"):
        team = make_team(name, store_content=(name == "attacker"))
        make_feature(team, "chatbot")
        keys[name] = make_key(team)[1]
    (gateway,) = gateways(1, GATEWAY_LEDGER_IN_PROCESS="1", GATEWAY_LEDGER_FLUSH_INTERVAL_S="0.2")

    def ask(who: str, **body) -> httpx.Response:
        payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **body}
        return httpx.post(
            f"{gateway.base_url}/chat/completions",
            json=payload,
            headers={
                "Authorization": f"Bearer {keys[who]}",
                "X-Gateway-Feature": "chatbot",
                "X-Gateway-Cache-TTL": "0",
            },
            timeout=30,
        )

    attacks = [ask("attacker", model="x\u0000y")]  # the curl of the report
    openai_server.script(ok(), ok(prompt_tokens=10**15), *[ok()] * 6)
    attacks.append(ask("attacker", messages=[{"role": "user", "content": "a\u0000b"}]))
    attacks.append(ask("attacker", messages=[{"role": "user", "content": "count big"}]))
    good = [ask(who) for who in ("alpha", "beta") * 3]

    assert [r.status_code for r in good] == [200] * 6
    wanted = {r.headers["x-request-id"] for r in good}

    def landed() -> bool:
        return wanted <= set(UsageRecord.objects.values_list("request_id", flat=True))

    wait_for(landed, timeout=20, what="the other teams' records to reach the ledger")
    wait_for(
        lambda: ledger.queued() == 0,
        timeout=10,
        what="the ledger queue to empty",
    )
    attacker_ids = {r.headers["x-request-id"] for r in attacks if "x-request-id" in r.headers}
    accounted = set(
        UsageRecord.objects.filter(request_id__in=attacker_ids).values_list("request_id", flat=True)
    ) | set(DeadLetter.objects.values_list("request_id", flat=True))
    assert attacker_ids <= accounted, gateway.output()
