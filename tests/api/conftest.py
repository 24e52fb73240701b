"""Fixtures of the query API tests: two tenants (acme on the parametrized tier, beta beside it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import TenantDb
from tests.support.mosquitto import Mosquitto

from .fake_alarms import FakeAlarms
from .support import ApiEnv, api_env


@pytest.fixture
def beta_db(tenant_db: TenantDb) -> Iterator[TenantDb]:
    """A second tenant database on the same server (and tier) as ``tenant_db``."""
    name = tenant_db.server.create_database()
    yield TenantDb(tenant_db.tier, tenant_db.server, name)
    tenant_db.server.drop_database(name)


@pytest.fixture
async def env(tenant_db: TenantDb, beta_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> AsyncIterator[ApiEnv]:
    async with api_env(tenant_db, beta_db, mosquitto, state_dir) as e:
        yield e


@pytest.fixture
def beta_apache(apache_db: TenantDb) -> Iterator[TenantDb]:
    name = apache_db.server.create_database()
    yield TenantDb("apache", apache_db.server, name)
    apache_db.server.drop_database(name)


@pytest.fixture
def fake_alarms() -> FakeAlarms:
    return FakeAlarms()


@pytest.fixture
async def env1(apache_db: TenantDb, beta_apache: TenantDb, mosquitto: Mosquitto, state_dir: Path,
               fake_alarms: FakeAlarms) -> AsyncIterator[ApiEnv]:
    """One tier only (for HTTP-layer tests where storage does not matter), with a fake alarm engine."""
    async with api_env(apache_db, beta_apache, mosquitto, state_dir, alarm_service=fake_alarms) as e:
        yield e
