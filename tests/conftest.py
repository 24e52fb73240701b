"""Shared fixtures: real PostgreSQL/TimescaleDB servers, a real Mosquitto broker, tenant databases.

Every storage test runs against both a TimescaleDB-Apache tenant and a plain-PostgreSQL tenant
through the ``tenant_db`` fixture (parametrized by tier).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.pg import PgServer


@pytest.fixture(scope="session")
def pg_ts() -> Iterator[PgServer]:
    """A PostgreSQL server with TimescaleDB (Apache edition) preloaded."""
    s = PgServer(timescaledb=True)
    if not s.timescaledb:
        s.close()
        pytest.fail("TimescaleDB is not installed: run scripts/setup.sh (make test does)")
    s.start()
    yield s
    s.close()


@pytest.fixture(scope="session")
def pg_plain() -> Iterator[PgServer]:
    """A plain PostgreSQL server (no TimescaleDB loaded), for the tier-3 storage path."""
    s = PgServer(timescaledb=False)
    s.start()
    yield s
    s.close()


@dataclass
class TenantDb:
    tier: str
    server: PgServer
    name: str

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    def query(self, sql: str) -> list[tuple[object, ...]]:
        return self.server.execute(sql, self.name)


@pytest.fixture(params=["apache", "postgres"])
def tenant_db(request: pytest.FixtureRequest) -> Iterator[TenantDb]:
    """A fresh, empty tenant database on each storage tier available here."""
    server: PgServer = request.getfixturevalue("pg_ts" if request.param == "apache" else "pg_plain")
    name = server.create_database()
    yield TenantDb(request.param, server, name)
    server.drop_database(name)


@pytest.fixture
def apache_db(pg_ts: PgServer) -> Iterator[TenantDb]:
    name = pg_ts.create_database()
    yield TenantDb("apache", pg_ts, name)
    pg_ts.drop_database(name)


@pytest.fixture
def plain_db(pg_plain: PgServer) -> Iterator[TenantDb]:
    name = pg_plain.create_database()
    yield TenantDb("postgres", pg_plain, name)
    pg_plain.drop_database(name)


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    """A shared broker (use unique topics and client ids per test)."""
    b = Mosquitto()
    b.start()
    yield b
    b.close()


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """A broker of this test only (restart/kill it freely)."""
    b = Mosquitto()
    b.start()
    yield b
    b.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def timescale_licensed_dsn() -> str:
    dsn = os.environ.get("INGESTD_TEST_TIMESCALE_DSN")
    if not dsn:
        pytest.skip("INGESTD_TEST_TIMESCALE_DSN not set (TimescaleDB with the timescale license)")
    return dsn
