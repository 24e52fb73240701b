"""Security: encrypted endpoints with certificates, username authentication, certificate reuse,
server certificate pinning, and how failures are typed (SourceAuthError / SourceConfigError)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError
from cryptography.hazmat.primitives.serialization import Encoding
from opcua_testserver import PlcServer, ServerPki, latest, source_config

from adapters.opcua.certs import CERT_NAME, KEY_NAME
from adapters.opcua.config import OpcUaSourceConfig
from adapters.opcua.source import OpcUaSource
from ingestd.errors import SourceAuthError, SourceConfigError
from ingestd.testing import RecordingContext

PASSWORD = "s3cr3t-Pa55"
USERS = {"ingestd": PASSWORD}


@pytest.fixture(scope="module")
def server_pki(tmp_path_factory: pytest.TempPathFactory) -> ServerPki:
    return ServerPki.create(tmp_path_factory.mktemp("server-pki"))


def secure_config(server: PlcServer, password: str = "env:OPCUA_TEST_PASSWORD", **security: Any) -> OpcUaSourceConfig:
    return source_config(
        server.endpoint, 2,
        security={"policy": "Basic256Sha256", "mode": "SignAndEncrypt", **security},
        auth={"method": "username", "username": "ingestd", "password": password},
    )


async def run_until_data(cfg: OpcUaSourceConfig, state_dir: Path) -> RecordingContext:
    ctx = RecordingContext.for_source(cfg, state_dir=state_dir)
    task = asyncio.create_task(OpcUaSource(cfg).run(ctx))
    try:
        await ctx.wait_for(lambda c: latest(c, "tag01") == 1.0, timeout=15)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return ctx


async def run_expecting(cfg: OpcUaSourceConfig, state_dir: Path, error: type[Exception]) -> tuple[
        Exception, RecordingContext]:
    ctx = RecordingContext.for_source(cfg, state_dir=state_dir)
    with pytest.raises(error) as info:
        await asyncio.wait_for(OpcUaSource(cfg).run(ctx), 15)
    return info.value, ctx


@pytest.mark.parametrize(("policy", "server_policy", "mode"), [
    ("Basic256Sha256", ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt, "SignAndEncrypt"),
    ("Basic256Sha256", ua.SecurityPolicyType.Basic256Sha256_Sign, "Sign"),
    ("Aes128_Sha256_RsaOaep", ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt, "SignAndEncrypt"),
    ("Aes256_Sha256_RsaPss", ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt, "SignAndEncrypt"),
])
async def test_secure_endpoint_with_username(plc: Any, server_pki: ServerPki, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, policy: str, server_policy: Any,
                                             mode: str) -> None:
    monkeypatch.setenv("OPCUA_TEST_PASSWORD", PASSWORD)
    server: PlcServer = await plc(n_tags=2, pki=server_pki, users=USERS, policies=[server_policy])
    cfg = secure_config(server, policy=policy, mode=mode, server_cert=str(server_pki.cert))
    ctx = await run_until_data(cfg, tmp_path)
    assert ctx.rec.status[0].kind == "up"
    assert (tmp_path / "pki" / CERT_NAME).exists()


async def test_wrong_password_is_an_auth_error_without_the_secret(plc: Any, server_pki: ServerPki, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    server: PlcServer = await plc(n_tags=2, pki=server_pki, users=USERS)
    wrong = "not-the-Pa55word"
    caplog.set_level(logging.DEBUG)
    exc, ctx = await run_expecting(secure_config(server, password=wrong), tmp_path, SourceAuthError)
    assert "BadUserAccessDenied" in str(exc)
    assert ctx.rec.status[-1].kind == "down"
    for text in (str(exc), ctx.rec.status[-1].reason, caplog.text):
        assert wrong not in text


async def test_missing_password_secret_is_an_auth_error(plc: Any, server_pki: ServerPki, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPCUA_TEST_PASSWORD", raising=False)
    server: PlcServer = await plc(n_tags=2, pki=server_pki, users=USERS)
    exc, _ = await run_expecting(secure_config(server), tmp_path, SourceAuthError)
    assert "OPCUA_TEST_PASSWORD" in str(exc)


async def test_second_start_reuses_the_client_certificate(plc: Any, server_pki: ServerPki, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The server trusts the first certificate it sees and nothing else (like a real PLC after the
    operator trusted ingestd once). A restart must present the same certificate; a source that
    regenerated its certificate would be rejected."""
    monkeypatch.setenv("OPCUA_TEST_PASSWORD", PASSWORD)
    trusted: list[bytes] = []

    async def trust_first(cert: Any, _app: Any) -> None:
        der = cert.public_bytes(Encoding.DER)
        if not trusted:
            trusted.append(der)
        elif der != trusted[0]:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    server: PlcServer = await plc(n_tags=2, pki=server_pki, users=USERS, trust=trust_first)
    state = tmp_path / "source-state"
    cfg = secure_config(server)
    await run_until_data(cfg, state)
    cert, key = (state / "pki" / CERT_NAME).read_bytes(), (state / "pki" / KEY_NAME).read_bytes()
    await run_until_data(cfg, state)  # second start: same identity, still trusted
    assert (state / "pki" / CERT_NAME).read_bytes() == cert
    assert (state / "pki" / KEY_NAME).read_bytes() == key
    assert len(trusted) == 1
    # a source with another identity is refused, and that is an auth error (parked, not retried)
    exc, _ = await run_expecting(cfg, tmp_path / "other-state", SourceAuthError)
    assert "BadCertificateUntrusted" in str(exc)


async def test_pinned_server_certificate_mismatch_is_an_auth_error(plc: Any, server_pki: ServerPki,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPCUA_TEST_PASSWORD", PASSWORD)
    other = ServerPki.create(tmp_path / "other-server")
    server: PlcServer = await plc(n_tags=2, pki=server_pki, users=USERS)
    exc, _ = await run_expecting(secure_config(server, server_cert=str(other.cert)), tmp_path, SourceAuthError)
    assert "server_cert" in str(exc)


@pytest.mark.parametrize("security", [
    {"policy": "Aes256_Sha256_RsaPss", "mode": "Sign"},  # not offered by the server
    {"policy": "None"},  # the server has no unsecured endpoint
])
async def test_no_matching_endpoint_is_a_config_error(plc: Any, server_pki: ServerPki, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      security: dict[str, str]) -> None:
    monkeypatch.setenv("OPCUA_TEST_PASSWORD", PASSWORD)
    server: PlcServer = await plc(n_tags=2, pki=server_pki, users=USERS)
    cfg = source_config(server.endpoint, 2, security=security,
                        auth={"method": "username", "username": "ingestd", "password": "env:OPCUA_TEST_PASSWORD"})
    exc, _ = await run_expecting(cfg, tmp_path, SourceConfigError)
    assert "endpoint" in str(exc)
