"""`REDIS_URL` in its Sentinel form, for every Redis client the gateway has (redis-py's asyncio
and sync clients in gateway/runtime.py, the config subscriber, django-redis):

    redis+sentinel://[user:password@]host:26379[,host2:26379...]/service-name[/db]

(`sentinel://` is the same). The clients ask the sentinels for the primary of
`service-name` and, through redis-py's Sentinel pools, look it up again when a connection
fails or the server answers READONLY (it was demoted): a failover needs no restart. The
password, if any, is the primary's and is sent to the sentinels too. The hot path's
pipelined connection (gateway/fastpath/multiplex.py) is not used with Sentinel: round trips
go through the Sentinel pool, which follows the primary (docs/operations.md, "Redis").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

SCHEMES = ("redis+sentinel", "sentinel")
SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelConfig:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """What the primary's connections take (and, for auth, the sentinels')."""
        return {"db": self.db, "username": self.username, "password": self.password}

    def sentinel_kwargs(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password} if self.password else {}


def sentinel_config(url: str | None) -> SentinelConfig | None:
    """The Sentinel setup `url` names, or None for a plain redis:// / rediss:// / unix:// URL.
    A malformed Sentinel URL stops the start with the reason (never a silent fallback)."""
    if not url or url.split("://", 1)[0] not in SCHEMES:
        return None
    parts = urlsplit(url)
    hosts: list[tuple[str, int]] = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        host = host.strip("[]")
        try:
            number = int(port) if port else SENTINEL_PORT
        except ValueError:
            number = 0
        if not host or not 0 < number < 65536:
            raise ImproperlyConfigured(
                f"REDIS_URL: {item.strip()!r} is not a sentinel host:port "
                "(redis+sentinel://host:26379[,host2:26379]/service-name[/db])."
            )
        hosts.append((host, number))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ImproperlyConfigured(
            "REDIS_URL: a Sentinel URL names the service and optionally the db: "
            "redis+sentinel://host:26379[,host2:26379]/service-name[/db]."
        )
    userinfo = parts.netloc.rpartition("@")[0]
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    return SentinelConfig(
        sentinels=tuple(hosts),
        service=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
    )
