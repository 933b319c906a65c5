"""`REDIS_URL` in its Sentinel and Cluster forms, for every Redis client the gateway has
(redis-py's asyncio and sync clients in gateway/runtime.py, the config subscriber,
django-redis), and the hash tags that Redis Cluster needs in key names.

Sentinel:

    redis+sentinel://[user:password@]host:26379[,host2:26379...]/service-name[/db]

(`sentinel://` is the same). The clients ask the sentinels for the primary of
`service-name` and, through redis-py's Sentinel pools, look it up again when a connection
fails or the server answers READONLY (it was demoted): a failover needs no restart. The
password, if any, is the primary's and is sent to the sentinels too. The hot path's
pipelined connection (gateway/fastpath/multiplex.py) is not used with Sentinel: round trips
go through the Sentinel pool, which follows the primary (docs/operations.md, "Redis").

Cluster:

    redis+cluster://[user:password@]host:port[,host2:port...][/0]

The hosts are where the clients start: they learn the rest of the cluster from them. On a
cluster every script's keys must share one hash slot. A team's keys (its budgets' counters,
its keys' and its own rate buckets, its cache entries) carry the tag `{t<team id>}`, so a
request's admission and settle scripts each run on the one node that holds that team. What
every team shares (the in-flight register, the ledger queue, circuit breakers, the config
version) carries the tag `{gw}` and lives on one node. A plain Redis gets the names it always
had, so an upgrade renames nothing; moving to a cluster is a move (docs/operations.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

SCHEMES = ("redis+sentinel", "sentinel")
CLUSTER_SCHEMES = ("redis+cluster",)
SENTINEL_PORT = 26379
REDIS_PORT = 6379


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
    hosts = _hosts(parts.netloc, SENTINEL_PORT, SENTINEL_FORM)
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ImproperlyConfigured(
            f"REDIS_URL: a Sentinel URL names the service and optionally the db: {SENTINEL_FORM}."
        )
    username, password = _credentials(parts.netloc)
    return SentinelConfig(
        sentinels=hosts,
        service=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        username=username,
        password=password,
    )


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    nodes: tuple[tuple[str, int], ...]  # where the clients start
    username: str | None = None
    password: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password}


def cluster_config(url: str | None) -> ClusterConfig | None:
    """The cluster `url` names, or None for any other form. Malformed stops the start."""
    if not url or url.split("://", 1)[0] not in CLUSTER_SCHEMES:
        return None
    parts = urlsplit(url)
    if parts.path.strip("/") not in ("", "0") or parts.query:
        raise ImproperlyConfigured(
            f"REDIS_URL: Redis Cluster has only database 0 and takes no options: {CLUSTER_FORM}."
        )
    return ClusterConfig(
        _hosts(parts.netloc, REDIS_PORT, CLUSTER_FORM), *_credentials(parts.netloc)
    )


SENTINEL_FORM = "redis+sentinel://host:26379[,host2:26379]/service-name[/db]"
CLUSTER_FORM = "redis+cluster://host:6379[,host2:6379...][/0]"


def _hosts(netloc: str, default_port: int, form: str) -> tuple[tuple[str, int], ...]:
    hosts: list[tuple[str, int]] = []
    for item in netloc.rpartition("@")[2].split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        host = host.strip("[]")
        try:
            number = int(port) if port else default_port
        except ValueError:
            number = 0
        if not host or not 0 < number < 65536:
            raise ImproperlyConfigured(f"REDIS_URL: {item.strip()!r} is not a host:port ({form}).")
        hosts.append((host, number))
    return tuple(hosts)


def _credentials(netloc: str) -> tuple[str | None, str | None]:
    userinfo = netloc.rpartition("@")[0]
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    return unquote(username) or None, unquote(password) or None


# Decided once, when the settings are read: a process talks to one kind of Redis.
CLUSTER = False


def configure(url: str | None) -> None:
    """Called by the settings with REDIS_URL: whether key names carry cluster hash tags."""
    global CLUSTER
    CLUSTER = cluster_config(url) is not None


def team_tag(team_id: int) -> str:
    """What a team's keys start with after their kind (`gw:budget:` + this): on a cluster
    the hash tag that keeps every key of the team's requests in one slot."""
    return f"{{t{team_id}}}:" if CLUSTER else ""


def shared_key(name: str) -> str:
    """A key every team shares (`ledger`, `inflight`, ...): `gw:<name>`, or on a cluster
    `{gw}:<name>`, all in one slot so that a script may touch any of them."""
    return ("{gw}:" if CLUSTER else "gw:") + name
