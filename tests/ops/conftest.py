"""Fixtures of the operations tests: a broker that logs its connections, extra tenant databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import TenantDb
from tests.support.mosquitto import Mosquitto
from tests.support.pg import PgServer


class CountingBroker(Mosquitto):
    """A broker of one test that logs connections, so a test can count (re)connects per client id."""

    def __init__(self) -> None:
        super().__init__(extra="log_type notice\n")

    def connections(self, client_id: str) -> int:
        lines = (self.root / "broker.log").read_text(errors="replace").splitlines()
        return sum(1 for line in lines if "New client connected" in line and f" as {client_id} (" in line)


@pytest.fixture
def counting_broker() -> Iterator[CountingBroker]:
    b = CountingBroker()
    b.start()
    yield b
    b.close()


@pytest.fixture
def other_db(pg_ts: PgServer) -> Iterator[TenantDb]:
    """A second fresh TimescaleDB database (a second tenant, or a tenant's new home)."""
    name = pg_ts.create_database()
    yield TenantDb("apache", pg_ts, name)
    pg_ts.drop_database(name)
