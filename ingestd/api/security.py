"""Authentication and tenant isolation for every API request.

Model:

* a bearer token belongs to exactly one tenant (the tenant whose ``api_tokens`` holds its hash);
  a hash configured under two tenants is ignored (logged), never shared;
* scopes are cumulative: ``read`` < ``ack`` < ``admin`` (an ``ack`` token can read what it acks);
* the tenant is in the path (``/v1/tenants/{tenant}/...``); a token used on another tenant's path gets
  404 "tenant not found", exactly like a tenant that does not exist — no data, no enumeration;
* when ``api.tenant_from_host`` is on and the Host header names a tenant subdomain
  (``acme.<host of api.public_url>``, or without ``public_url`` a first DNS label that is a configured
  tenant slug of a host with three or more labels), it must be the token's tenant (403 otherwise);
* tokens are never logged, echoed or put in metrics; comparisons are constant-time.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..auth import token_digest, verify_token
from ..config.model import TenantConfig
from ..config.types import SLUG_RE
from ..pipeline.tenant import TenantPipeline
from .context import ApiContext
from .errors import ApiError

__all__ = [
    "Access",
    "AckAccess",
    "AdminAccess",
    "Principal",
    "ReadAccess",
    "Scope",
    "TokenIndex",
    "authenticate",
    "base_host_of",
    "bearer",
    "host_tenant",
    "principal",
]

log = logging.getLogger(__name__)

Scope = Literal["read", "ack", "admin"]
_RANK: Final = {"read": 0, "ack": 1, "admin": 2}
_MAX_TOKEN_LEN: Final = 512
_MAX_VERIFIED: Final = 1024

bearer = HTTPBearer(auto_error=False, description="Tenant API token (`ingestd token`)", scheme_name="token")


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    token_name: str
    scopes: frozenset[str]

    def allows(self, scope: Scope) -> bool:
        need = _RANK[scope]
        return any(_RANK.get(s, -1) >= need for s in self.scopes)


@dataclass(frozen=True, slots=True)
class Access:
    """An authenticated request for one tenant's resources."""

    principal: Principal
    tenant: str
    pipeline: TenantPipeline


class TokenIndex:
    """Token → principal. ``sha256:`` hashes are looked up by digest (then compared in constant
    time); ``scrypt:`` hashes are tried one by one (each try costs a KDF run on the event loop, so an
    unknown token costs one per scrypt entry: keep them few) and a verified one is remembered by digest
    until the next reload."""

    def __init__(self, tenants: Sequence[TenantConfig]) -> None:
        by_digest: dict[str, list[Principal]] = {}
        self._slow: list[tuple[str, Principal]] = []
        for t in tenants:
            for tok in t.api_tokens:
                p = Principal(t.slug, tok.name, frozenset(tok.scopes))
                if tok.hash.startswith("sha256:"):
                    by_digest.setdefault(tok.hash.removeprefix("sha256:").lower(), []).append(p)
                else:
                    self._slow.append((tok.hash, p))
        self._fast: dict[str, tuple[str, Principal]] = {}
        for digest, owners in by_digest.items():
            tenants_of = {p.tenant for p in owners}
            if len(tenants_of) > 1:
                log.error("query API: one token hash is configured for tenants %s; it is ignored (a token "
                          "belongs to exactly one tenant)", sorted(tenants_of))
                continue
            scopes = frozenset().union(*(p.scopes for p in owners))
            self._fast[digest] = (digest, Principal(owners[0].tenant, owners[0].token_name, scopes))
        self.tenants = frozenset(t.slug for t in tenants)
        self._verified: dict[str, tuple[str, Principal]] = {}

    def __len__(self) -> int:
        return len(self._fast) + len(self._slow)

    def lookup(self, token: str) -> Principal | None:
        hit = self.identify(token)
        return None if hit is None else hit[1]

    def identify(self, token: str) -> tuple[str, Principal] | None:
        """(credential id, principal): the id (digest or stored hash) lets a long-lived connection be
        re-checked after a reload without keeping the token itself."""
        if not token or len(token) > _MAX_TOKEN_LEN or not token.isascii() or not token.isprintable():
            return None
        digest = token_digest(token)
        hit = self._fast.get(digest)
        if hit is not None and hmac.compare_digest(hit[0], digest):
            return digest, hit[1]
        known = self._verified.get(digest)
        if known is not None:
            return known
        for stored, cand in self._slow:
            if verify_token(token, stored):
                if len(self._verified) < _MAX_VERIFIED:
                    self._verified[digest] = (stored, cand)
                return stored, cand
        return None

    def revalidate(self, credential: str) -> Principal | None:
        """The principal of a credential id from :meth:`identify`, if still configured."""
        hit = self._fast.get(credential)
        if hit is not None:
            return hit[1]
        for stored, cand in self._slow:
            if stored == credential:
                return cand
        return None


def host_tenant(host_header: str, base_host: str | None, tenants: frozenset[str]) -> str | None:
    """The tenant named by a Host header's subdomain, if any (see the module docstring)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return None  # IPv6 literal
    host = host.rsplit(":", 1)[0] if ":" in host else host
    host = host.rstrip(".")
    if not host:
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if base_host:
        base = base_host.lower().rstrip(".")
        if host == base or not host.endswith("." + base):
            return None
        label = host[: -len(base) - 1]
        return label if "." not in label else None
    labels = host.split(".")
    if len(labels) >= 3 and labels[0] in tenants:
        return labels[0]
    return None


def base_host_of(public_url: str | None) -> str | None:
    if not public_url:
        return None
    return urlsplit(public_url).hostname


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="ingestd"'})


def authenticate(request_host: str, authorization: str | None, *, tokens: TokenIndex, base_host: str | None,
                 tenant_from_host: bool) -> tuple[str, Principal]:
    """(credential id, principal) of an ``Authorization`` header; shared by HTTP routes and WebSockets."""
    if not authorization:
        raise _unauthorized("missing bearer token (Authorization: Bearer <token>)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("missing bearer token (Authorization: Bearer <token>)")
    hit = tokens.identify(token.strip())
    if hit is None:
        raise _unauthorized("invalid bearer token")
    credential, p = hit
    if tenant_from_host:
        named = host_tenant(request_host, base_host, tokens.tenants)
        if named is not None and named != p.tenant:
            raise ApiError(403, "the Host names another tenant than the token's")
    return credential, p


async def principal(request: Request,
                    creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> Principal:
    ctx = ApiContext.of(request.app)
    header = f"Bearer {creds.credentials}" if creds is not None else None
    return authenticate(request.headers.get("host", ""), header, tokens=ctx.tokens, base_host=ctx.options.base_host,
                        tenant_from_host=ctx.options.tenant_from_host)[1]


TenantPath = Annotated[str, Path(pattern=f"^{SLUG_RE}$", description="Tenant slug (must be the token's tenant).")]


def _access(scope: Scope) -> Callable[..., Awaitable[Access]]:
    async def dep(request: Request, p: Annotated[Principal, Depends(principal)], tenant: TenantPath) -> Access:
        if tenant != p.tenant:
            raise ApiError(404, "tenant not found", parameter="tenant")
        if not p.allows(scope):
            raise ApiError(403, f"this token lacks the '{scope}' scope")
        pipeline = ApiContext.of(request.app).daemon.tenants.get(tenant)
        if pipeline is None:
            raise ApiError(404, "tenant not found", parameter="tenant")
        return Access(p, tenant, pipeline)

    return dep


ReadAccess = Annotated[Access, Depends(_access("read"))]
"""The caller may read the path tenant's data."""
AckAccess = Annotated[Access, Depends(_access("ack"))]
"""The caller may acknowledge, shelve and take alarms out of service in the path tenant."""
AdminAccess = Annotated[Access, Depends(_access("admin"))]
