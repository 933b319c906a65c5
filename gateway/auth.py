"""Who is calling: the team key in `Authorization: Bearer …`, resolved without the database
on a steady state (see gateway.config for the cache and its bound)."""

from __future__ import annotations

from gateway.config import FeatureSnap, KeySnap, Snapshot, TeamSnap, store
from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from gateway.models import ApiKey


def bearer_secret(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed("No API key: send 'Authorization: Bearer <your gateway key>'.")
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <key>'.")
    return secret


async def authenticate(authorization: str | None) -> tuple[KeySnap, TeamSnap, Snapshot]:
    """The key, its team and the config snapshot; 401 for a missing, unknown, revoked or
    expired key. The lookup is by SHA-256 of the secret through a dict/index, so no
    comparison of secrets happens in Python at all (nothing to time)."""
    secret = bearer_secret(authorization)
    key = await store().key(ApiKey.hash_secret(secret))
    if key is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    if not key.active:
        raise AuthenticationFailed(
            f"The API key {key.prefix}… is revoked or expired.", code="revoked_api_key"
        )
    snapshot = await store().snapshot()
    team = snapshot.teams.get(key.team_id)
    if team is None:
        raise AuthenticationFailed("The API key's team no longer exists.")
    return key, team, snapshot


def resolve_feature(key: KeySnap, team: TeamSnap, header: str | None) -> FeatureSnap | None:
    """The feature the request is billed to: the key's pinned one, or the X-Gateway-Feature
    header. A team that has features must name one."""
    pinned = next((f for f in team.features.values() if f.id == key.feature_id), None)
    name = (header or "").strip()
    if pinned is not None:
        if name and name != pinned.name:
            raise PermissionDenied(
                f"This key is pinned to the feature '{pinned.name}'; it cannot bill '{name}'.",
                param="X-Gateway-Feature",
            )
        return pinned
    known = ", ".join(sorted(team.features)) or "none"
    if not name:
        if team.features:
            raise InvalidRequest(
                "Name the feature in the X-Gateway-Feature header; "
                f"team '{team.name}' has: {known}.",
                param="X-Gateway-Feature",
                code="feature_required",
            )
        return None
    feature = team.features.get(name)
    if feature is None:
        raise InvalidRequest(
            f"Unknown feature '{name}' for team '{team.name}'; its features are: {known}.",
            param="X-Gateway-Feature",
            code="unknown_feature",
        )
    return feature
