"""Signed, expiring "Acknowledge" links for Teams cards (the query API serves them).

A Teams Workflows card can only open a URL (no Action.Submit through a webhook), so the card carries
``Action.OpenUrl`` to ``{api.public_url}/v1/alarms/ack?t=<tenant>&a=<alarm>&e=<event>&x=<expiry>&s=<sig>``.
The API must show a confirmation page on GET and acknowledge only on POST (link previews and mail scanners
follow GETs), verifying the link with :meth:`AckLinks.verify` and passing ``event_id`` to
:func:`alarms.state.acknowledge` so a link from a closed episode cannot acknowledge a newer one.

The signature is HMAC-SHA256 (key: ``api.link_secret``) over a length-prefixed encoding of
(tenant, alarm id, event id, expiry) — unambiguous whatever the fields contain — compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from .errors import LinkExpired, LinkInvalid

__all__ = ["ACK_PATH", "AckClaims", "AckLinks"]

ACK_PATH: Final = "/v1/alarms/ack"
_DOMAIN: Final = b"ingestd-ack-v1"
_MAX_FIELD: Final = 512


@dataclass(frozen=True, slots=True)
class AckClaims:
    """What a verified link authorises: acknowledging ``event_id`` of ``alarm_id`` in ``tenant``."""

    tenant: str
    alarm_id: str
    event_id: str
    expires: int
    """Unix seconds."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class AckLinks:
    """Sign and verify acknowledge links. The key never appears in reprs or errors."""

    __slots__ = ("_base", "_key", "_path", "ttl_s")

    def __init__(self, key: str | bytes, public_url: str, *, ttl_s: float = 86400.0, path: str = ACK_PATH) -> None:
        raw = key.encode() if isinstance(key, str) else key
        if len(raw) < 16:
            raise ValueError("the link signing key must be at least 16 bytes")
        self._key = raw
        self._base = public_url.rstrip("/")
        self._path = path
        self.ttl_s = ttl_s

    def __repr__(self) -> str:
        return f"AckLinks({self._base!r}, ttl_s={self.ttl_s:g})"

    def _mac(self, tenant: str, alarm_id: str, event_id: str, expires: int) -> bytes:
        msg = bytearray(_DOMAIN)
        for part in (tenant, alarm_id, event_id, str(expires)):
            b = part.encode("utf-8")
            msg += len(b).to_bytes(4, "big") + b
        return hmac.new(self._key, bytes(msg), hashlib.sha256).digest()

    def sign(self, tenant: str, alarm_id: str, event_id: str, expires: int) -> str:
        return _b64(self._mac(tenant, alarm_id, event_id, expires))

    def url(self, tenant: str, alarm_id: str, event_id: str, now_us: int) -> str:
        """The link to put in a card, valid for ``ttl_s`` from ``now_us``."""
        expires = now_us // 1_000_000 + int(self.ttl_s)
        q = urlencode({"t": tenant, "a": alarm_id, "e": event_id, "x": expires,
                       "s": self.sign(tenant, alarm_id, event_id, expires)})
        return f"{self._base}{self._path}?{q}"

    def verify(self, tenant: str, alarm_id: str, event_id: str, expires: int | str, sig: str,
               now_us: int) -> AckClaims:
        """Raise :class:`LinkInvalid` (tampered/malformed) or :class:`LinkExpired`; return the claims."""
        try:
            exp = int(expires)
        except (TypeError, ValueError):
            raise LinkInvalid("malformed expiry") from None
        if any(len(p) > _MAX_FIELD for p in (tenant, alarm_id, event_id, sig)):
            raise LinkInvalid("malformed link")
        expected = self.sign(tenant, alarm_id, event_id, exp).encode("ascii")
        if not hmac.compare_digest(expected, sig.encode("utf-8", "replace")):
            raise LinkInvalid("bad signature")
        if now_us // 1_000_000 >= exp:
            raise LinkExpired("the acknowledge link has expired; open the alarm list to acknowledge")
        return AckClaims(tenant, alarm_id, event_id, exp)

    def verify_query(self, query: Mapping[str, str], now_us: int) -> AckClaims:
        """Verify the query parameters of a link (``t``, ``a``, ``e``, ``x``, ``s``)."""
        try:
            return self.verify(query["t"], query["a"], query["e"], query["x"], query["s"], now_us)
        except KeyError:
            raise LinkInvalid("incomplete link") from None
