"""API bearer tokens: generated with 256 bits of randomness, stored only as a hash, compared in
constant time. (Random 256-bit tokens need no slow KDF: there is nothing to brute-force.)

Token format: ``igd_<tenant>_<43 url-safe chars>``; the tenant prefix is informative only —
the token's tenant is the one whose ``api_tokens`` list holds its hash.

Stored hash formats (``TenantConfig.api_tokens[].hash``):

* ``sha256:<hex>`` — what ``ingestd token`` prints; the query API indexes these by digest;
* ``scrypt:<log2 n>:<r>:<p>:<salt b64>:<hash b64>`` — accepted for sites whose policy demands a KDF
  (see :func:`hash_token_scrypt`); each is verified with scrypt, so keep them few.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

__all__ = ["hash_token", "hash_token_scrypt", "new_token", "token_digest", "verify_token"]

_MAX_SCRYPT_LOG_N = 20


def new_token(tenant: str = "") -> str:
    body = secrets.token_urlsafe(32)
    return f"igd_{tenant}_{body}" if tenant else f"igd_{body}"


def token_digest(token: str) -> str:
    """Hex SHA-256 of a token (the part after ``sha256:`` in a stored hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_token(token: str) -> str:
    return "sha256:" + token_digest(token)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_token_scrypt(token: str, *, log_n: int = 14, r: int = 8, p: int = 1) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(token.encode(), salt=salt, n=1 << log_n, r=r, p=p, dklen=32, maxmem=1 << 27)
    return f"scrypt:{log_n}:{r}:{p}:{_b64(salt)}:{_b64(dk)}"


def _verify_scrypt(token: str, stored: str) -> bool:
    try:
        _, log_n_s, r_s, p_s, salt_s, dk_s = stored.split(":")
        log_n, r, p = int(log_n_s), int(r_s), int(p_s)
        salt, dk = base64.b64decode(salt_s, validate=True), base64.b64decode(dk_s, validate=True)
    except (ValueError, binascii.Error):
        return False
    if not (1 <= log_n <= _MAX_SCRYPT_LOG_N and 1 <= r <= 32 and 1 <= p <= 16 and 16 <= len(dk) <= 64):
        return False
    try:
        got = hashlib.scrypt(token.encode(), salt=salt, n=1 << log_n, r=r, p=p, dklen=len(dk), maxmem=1 << 30)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, dk)


def verify_token(token: str, stored_hash: str) -> bool:
    """Constant-time comparison of ``token`` against a stored ``sha256:`` or ``scrypt:`` hash."""
    if stored_hash.startswith("scrypt:"):
        return _verify_scrypt(token, stored_hash)
    return hmac.compare_digest(hash_token(token).encode(), stored_hash.encode())
