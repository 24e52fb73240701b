"""End to end on both storage tiers: edge node → Mosquitto → ingestd (Sparkplug host) → tenant database.

Checks stored values (signs, NULL/BAD, historical backfill, explicit tag) and that an NDEATH opens an
outage window in ``source_status`` that the next BIRTH closes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import psycopg

from tests.conftest import TenantDb
from tests.support.daemon import make_config, running_daemon
from tests.support.mosquitto import Mosquitto

from .test_source import Observer, edge, unique


async def poll(db: TenantDb, sql: str, ok: object, timeout: float = 20.0) -> list[tuple[object, ...]]:
    """Re-run ``sql`` until ``ok(rows)`` holds (the daemon writes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = await asyncio.to_thread(db.query, sql)
        except psycopg.errors.UndefinedTable:
            rows = []
        if ok(rows):  # type: ignore[operator]
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {sql!r}: {rows}")
        await asyncio.sleep(0.05)  # polling the database written by the daemon


async def test_sparkplug_to_database_with_outage(tenant_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    group, host_id = unique("g"), unique("h-")
    cfg = make_config(
        state_dir=state_dir,
        tenants=[{"slug": "acme", "dsn": tenant_db.dsn, "storage": {"tier": "auto"}}],
        sources=[{
            "name": "spb", "protocol": "sparkplug", "host_id": host_id, "groups": [group],
            "connection": {"host": "127.0.0.1", "port": mosquitto.port, "client_id": f"ingestd-{uuid.uuid4().hex[:8]}"},
            "tags": [{"name": "well7.temp", "metric": "Temp", "node": "E1", "device": "D1", "unit": "degF"}],
        }],
    )
    past = int(time.time() * 1000) - 3_600_000
    async with running_daemon(cfg) as d, \
            Observer(mosquitto.port, f"spBv1.0/STATE/{host_id}", f"spBv1.0/{group}/NDEATH/E1") as obs:
        await obs.wait(lambda o: any(s["online"] for s in o.states()))  # the host is subscribed
        async with edge(mosquitto.port, group) as node:
            await node.birth()
            t1 = int(time.time() * 1000) - 10_000  # before the births' timestamps (the PK is (tag, ts))
            await node.data({"Temp": -13, "Small": -128}, "D1", ts=t1)
            await node.data({"Flow": None}, "D1", ts=t1 + 1)
            await node.data({"Temp": 99}, "D1", ts=past, is_historical=True)
            await poll(tenant_db, "SELECT count(*) FROM readings", lambda r: r and r[0][0] >= 9)

            await node.crash()  # the broker delivers the Will: NDEATH with the session's bdSeq
            await obs.wait(lambda o: any("/NDEATH/" in t for t, _, _ in o.messages))
            await node.reconnect()  # new session: births close the outage; their batch writes it
            rows = await poll(
                tenant_db, "SELECT source, device, down_at, up_at, reason FROM source_status ORDER BY device",
                lambda r: {(x[1], x[3] is not None) for x in r} == {(f"{group}/E1", True), (f"{group}/E1/D1", True)})
        assert d.tenants["acme"].tier is not None

    by_device = {r[1]: r for r in rows}
    node_row, dev_row = by_device[f"{group}/E1"], by_device[f"{group}/E1/D1"]
    assert node_row[0] == "spb" and node_row[2] <= node_row[3]  # type: ignore[operator]
    assert "NDEATH" in str(node_row[4]) and dev_row[3] is not None

    readings = tenant_db.query(
        "SELECT t.name, r.value, r.quality FROM readings r JOIN tags t USING (tag_id) ORDER BY t.name, r.ts")
    got: dict[str, list[tuple[object, object]]] = {}
    for name, value, quality in readings:
        got.setdefault(str(name), []).append((value, quality))
    # by timestamp: historical backfill (1 h ago), data (10 s ago), first birth, second session's birth
    assert got["well7.temp"] == [(99.0, 0), (-13.0, 0), (-12.0, 0), (99.0, 0)]
    assert got["E1.D1.Small"] == [(-128.0, 0), (-1.0, 0), (-128.0, 0)]
    assert got["E1.D1.Flow"] == [(None, 2), (1.5, 0), (None, 2)]  # NULL is stored as BAD
    assert got["E1.Uptime"] == [(float(2**64 - 1), 0)] * 2
    assert got["E1.D1.On"] == [(1.0, 0)] * 2
    unit = tenant_db.query("SELECT unit, source FROM tags WHERE name = 'well7.temp'")
    assert unit == [("degF", "spb")]
