"""OPC UA end to end through the daemon into the database, on both storage tiers: values, BAD quality as
NULL with the raw StatusCode, source timestamps, and an outage window when the server goes away."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from opcua_testserver import URI, PlcServer

from tests.conftest import TenantDb
from tests.support.daemon import make_config, running_daemon
from tests.support.wait import eventually


def _q(db: TenantDb, sql: str) -> list[tuple[object, ...]]:
    try:
        return db.query(sql)
    except Exception:  # not migrated yet
        return []


async def test_opcua_values_quality_and_outage_in_the_database(plc: Any, tenant_db: TenantDb,
                                                               state_dir: Path) -> None:
    server: PlcServer = await plc(n_tags=3)
    tags = [{"name": f"w.tag{i}", "node_id": f"nsu={URI};s=Tag{i:02d}", "unit": "psi"} for i in range(3)]
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": tenant_db.dsn}], sources=[{
        "name": "plc1", "protocol": "opcua", "endpoint": server.endpoint, "tags": tags,
        "watchdog_interval": "1s", "request_timeout": "2s", "connect_timeout": "3s", "backoff_max": "1s",
        "subscription": {"publishing_interval": "100ms"}}])
    src_ts = dt.datetime(2026, 11, 24, 6, 0, 0, 123000, tzinfo=dt.UTC)
    async with running_daemon(cfg):
        await server.write(0, 812.5, source_ts=src_ts)
        await server.write(1, 0.0, status=0x80340000)  # Bad_NodeIdUnknown-class bad status
        await eventually(lambda: asyncio.to_thread(
            _q, tenant_db, "SELECT 1 FROM readings r JOIN tags t USING (tag_id) WHERE t.name = 'w.tag1' "
                           "AND r.quality = 2"), what="bad sample stored")
        await eventually(lambda: asyncio.to_thread(
            _q, tenant_db, "SELECT 1 FROM readings WHERE value = 812.5"), what="good sample stored")
        await server.stop()
        await eventually(lambda: asyncio.to_thread(
            _q, tenant_db, "SELECT 1 FROM source_status WHERE source = 'plc1' AND up_at IS NULL"),
            timeout=30, what="outage window opened")
    good = tenant_db.query("SELECT r.ts, r.quality, r.status FROM readings r WHERE r.value = 812.5")
    assert good[0] == (src_ts, 0, 0)  # source timestamp kept, GOOD
    bad = tenant_db.query("SELECT r.value, r.status FROM readings r JOIN tags t USING (tag_id) "
                          "WHERE t.name = 'w.tag1' AND r.quality = 2")
    assert bad[0] == (None, 0x80340000)
    assert tenant_db.query("SELECT unit FROM tags WHERE name = 'w.tag0'") == [("psi",)]
