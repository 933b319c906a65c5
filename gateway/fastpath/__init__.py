"""Every place the hot path uses a library's internals, and the switch that turns them off.

Each module here replaces a stock part of Django, DRF/adrf, httpx or redis-py with a leaner
one that leans on that library's private API (gateway/fastpath/README.md has the table:
what is bypassed, what it saved, the version it was written against). Nothing outside this
package touches those internals.

`GATEWAY_FAST_PATH=0` (settings.GATEWAY["FAST_PATH"]) serves /v1 with the stock parts
instead: Django's ASGI handler with the site's middleware, adrf's dispatch, httpx's own
transport through `AsyncClient.send`, and redis-py's pooled pipelines. `.ci/run` runs the
end-to-end tests both ways, so an upgrade that breaks an internal can be shipped with the
switch off while the fast path is fixed.
"""

from __future__ import annotations

from django.conf import settings


def enabled() -> bool:
    return bool(settings.GATEWAY["FAST_PATH"])
