"""API bearer tokens: generated with 256 bits of randomness, stored only as a SHA-256 hash,
compared in constant time. (Random 256-bit tokens need no slow KDF: there is nothing to brute-force.)

Token format: ``igd_<tenant>_<43 url-safe chars>``; the tenant prefix is informative only —
the token's tenant is the one whose ``api_tokens`` list holds its hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["hash_token", "new_token", "verify_token"]


def new_token(tenant: str = "") -> str:
    body = secrets.token_urlsafe(32)
    return f"igd_{tenant}_{body}" if tenant else f"igd_{body}"


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def verify_token(token: str, stored_hash: str) -> bool:
    """Constant-time comparison of ``token`` against a stored ``sha256:<hex>`` hash."""
    return hmac.compare_digest(hash_token(token).encode(), stored_hash.encode())
