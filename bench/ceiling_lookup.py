"""What the fallback price ceiling costs a request (gateway/ceiling.py): `skips_for` on a
snapshot whose skips were computed when it loaded, against a request with no ceiling.

    PYTHONPATH=$PWD .venv/bin/python bench/ceiling_lookup.py
"""

from __future__ import annotations

import timeit
from decimal import Decimal

from gateway import ceiling
from gateway.money import Prices
from gateway.providers.base import ProviderConfig
from gateway.snapshot import ModelSnap, RouteSnap, Snapshot, TeamSnap


def model(name: str, i: str, o: str) -> ModelSnap:
    provider = ProviderConfig(name="p", kind="simulated", base_url="", api_key="")
    return ModelSnap(0, name, name, provider, Prices(Decimal(i), Decimal(o)), 128000, 4096, ())


def main() -> None:
    models = {
        m.name: m
        for m in (
            model("gpt-4o-mini", "0.15", "0.6"),
            model("gpt-4o", "2.5", "10"),
            model("claude-sonnet", "3", "15"),
        )
    }
    chain = tuple(models)
    team = TeamSnap(1, "acme", "UTC", "team", False, False, None, None, {}, (), Decimal(20))
    route = RouteSnap("catch-all", "", None, None, chain)
    snapshot = Snapshot(teams={1: team}, models=models, routes=(route,))
    bare = TeamSnap(2, "b", "UTC", "team", False, False, None, None, {}, ())
    n = 1_000_000
    for label, t in (("ceiling 20x", team), ("no ceiling", bare)):
        seconds = timeit.timeit(
            lambda t=t: ceiling.skips_for(snapshot, t, route, chain, "medium"), number=n
        )
        print(f"{label}: {seconds / n * 1e9:.0f} ns per request")


if __name__ == "__main__":
    main()
