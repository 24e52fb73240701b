"""Connection settings from config: certificates (generated once) and secrets, resolved at start.

Used by the source on every ``run()`` and by :mod:`.browse`. Blocking (file I/O, RSA key
generation on first use): call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Protocol

from ingestd.config.types import Secret, SecretUnavailable
from ingestd.errors import SourceAuthError, SourceConfigError

from .certs import application_uri_of, ensure_client_certificate, load_cert_der, load_key_der
from .client import ConnectSettings
from .config import AuthConfig, SecurityConfig

__all__ = ["Timeouts", "connect_settings"]


class Timeouts(Protocol):
    @property
    def connect_timeout(self) -> float: ...
    @property
    def request_timeout(self) -> float: ...
    @property
    def session_timeout(self) -> float: ...


def _reveal(secret: Secret | None, what: str, source: str) -> str | None:
    if secret is None:
        return None
    try:
        return secret.reveal()
    except SecretUnavailable as exc:
        raise SourceAuthError(f"OPC UA source {source!r}: {what} unavailable: {exc}") from None


def connect_settings(name: str, endpoint: str, security: SecurityConfig, auth: AuthConfig, state_dir: Path, *,
                     timeouts: Timeouts, log: logging.Logger | None = None) -> ConnectSettings:
    """Resolve certificates (generating the client's once into ``state_dir/pki``) and secrets."""
    cert_path: Path | None = None
    cert = key = server_cert = None
    app_uri = security.application_uri or f"urn:{socket.gethostname()}:ingestd:{name}"
    key_password = _reveal(security.client_key_password, "security.client_key_password", name)
    try:
        if security.policy != "None":
            if security.client_cert is not None and security.client_key is not None:
                cert_path, key_path = Path(security.client_cert), Path(security.client_key)
                app_uri = application_uri_of(cert_path) or app_uri
            else:
                pair = ensure_client_certificate(state_dir / "pki", app_uri)
                cert_path, key_path, app_uri = pair.cert, pair.key, pair.application_uri
                if pair.created and log is not None:
                    log.warning("OPC UA source %r: generated client certificate %s (application URI %s); "
                                "trust it on the server", name, cert_path, app_uri)
            cert, key = load_cert_der(cert_path), load_key_der(key_path, key_password)
            if security.server_cert is not None:
                server_cert = load_cert_der(Path(security.server_cert))
    except (OSError, ValueError, TypeError) as exc:
        raise SourceConfigError(f"OPC UA source {name!r}: certificate problem: {exc}") from None
    return ConnectSettings(
        endpoint=endpoint, source=name, policy=security.policy, mode=security.effective_mode, cert=cert, key=key,
        cert_path=cert_path, server_cert=server_cert, application_uri=app_uri, username=auth.username,
        password=_reveal(auth.password, "auth.password", name),
        connect_timeout=timeouts.connect_timeout, request_timeout=timeouts.request_timeout,
        session_timeout=timeouts.session_timeout,
    )
