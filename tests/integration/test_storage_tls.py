"""PostgreSQL with sslmode=verify-full and client certificates; plain DSNs flagged by check-config."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from adapters.registry import REGISTRY
from ingestd.config.load import parse_config, warnings
from ingestd.config.model import PoolConfig, StorageConfig
from ingestd.config.types import Secret
from ingestd.errors import StorageUnavailable
from ingestd.storage.migrate import migrate
from ingestd.storage.pool import TenantDb
from tests.adapters.mqtt.certs import Pki, make_pki
from tests.support.pg import PgServer


@pytest.fixture(scope="module")
def tls_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PgServer, Pki]]:
    s = PgServer(timescaledb=False)
    (s.root / "pki").mkdir()
    pki = make_pki(s.root / "pki", client_cn="postgres")  # cert auth maps the certificate CN to the user
    hba = s.root / "pg_hba.conf"
    hba.write_text("local all all trust\nhostssl all all 127.0.0.1/32 cert\n")
    if s.user:
        for p in (s.root / "pki", hba, *(s.root / "pki").iterdir()):
            shutil.chown(p, s.user)
    os.chmod(pki.server_key, 0o600)
    s.extra = {"ssl": "on", "ssl_cert_file": str(pki.server_cert), "ssl_key_file": str(pki.server_key),
               "ssl_ca_file": str(pki.ca), "hba_file": str(hba)}
    s.start_dsn_check = False
    s.start()
    # client key must not be group/world readable for libpq-style clients
    os.chmod(pki.client_key, 0o600)
    yield s, pki
    s.close()


def dsn(s: PgServer, pki: Pki, *, with_cert: bool = True) -> str:
    q = f"sslmode=verify-full&sslrootcert={pki.ca}"
    if with_cert:
        q += f"&sslcert={pki.client_cert}&sslkey={pki.client_key}"
    return f"postgresql://postgres@127.0.0.1:{s.port}/postgres?{q}"


async def test_verify_full_with_client_certificate(tls_pg: tuple[PgServer, Pki]) -> None:
    s, pki = tls_pg
    db = TenantDb("acme", Secret(dsn(s, pki)), PoolConfig(connect_timeout=5))
    try:
        async with db.connection() as conn:
            report = await migrate(conn, StorageConfig(tier="postgres"))
            assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        assert report.tier.value == "postgres"
    finally:
        await db.close()


async def test_missing_client_certificate_is_refused(tls_pg: tuple[PgServer, Pki]) -> None:
    s, pki = tls_pg
    db = TenantDb("acme", Secret(dsn(s, pki, with_cert=False)), PoolConfig(connect_timeout=5))
    try:
        with pytest.raises(StorageUnavailable):
            async with db.connection() as conn:
                await conn.fetchval("SELECT 1")
    finally:
        await db.close()


def test_check_config_flags_unverified_database_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECURE_DSN", "postgresql://u@db.example/x?sslmode=verify-full&sslrootcert=/ca.pem")
    cfg = parse_config({"tenants": [
        {"slug": "a", "dsn": "env:SECURE_DSN"},
        {"slug": "b", "dsn": "postgresql://u:pw@db.example/x?sslmode=require"},
        {"slug": "c", "dsn": "host=db.example dbname=x user=u"},
        {"slug": "d", "dsn": "env:UNSET_DSN_VARIABLE"},
    ]}, REGISTRY)
    found = {str(w) for w in warnings(cfg)}
    assert not any(w.startswith("tenants[0].dsn") for w in found), found
    assert "tenants[1].dsn: database connection is not verified (sslmode=require); use sslmode=verify-full" in found
    assert "tenants[2].dsn: database connection is not verified (sslmode=prefer); use sslmode=verify-full" in found
    assert any(w.startswith("tenants[3].dsn: cannot check the DSN: environment variable UNSET_DSN_VARIABLE")
               for w in found)
    assert not any("pw" in w.split(":", 1)[1] and "pw@" in w for w in found)
