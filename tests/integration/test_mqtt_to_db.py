"""Foundation end to end: MQTT JSON message → row in the tenant database, on both storage tiers."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiomqtt
import orjson
import psycopg

from tests.conftest import TenantDb
from tests.support.daemon import make_config, running_daemon
from tests.support.mosquitto import Mosquitto


def mqtt_source(broker: Mosquitto, prefix: str, **extra: object) -> dict[str, object]:
    src: dict[str, object] = {
        "name": "field",
        "protocol": "mqtt",
        "connection": {"host": "127.0.0.1", "port": broker.port, "client_id": f"ingestd-{prefix}"},
        "subscriptions": [{"topic": f"{prefix}/{{tenant}}/wells/{{well}}/{{tag}}", "tenant": "{tenant}",
                           "tag": "{well}.{tag}"}],
    }
    src.update(extra)
    return src


async def publish(broker: Mosquitto, messages: list[tuple[str, object]], qos: int = 1) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"pub-{uuid.uuid4().hex[:8]}") as c:
        for topic, payload in messages:
            await c.publish(topic, orjson.dumps(payload), qos=qos)


async def wait_rows(db: TenantDb, n: int, timeout: float = 20.0, where: str = "") -> list[tuple[object, ...]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = await asyncio.to_thread(db.query, f"SELECT count(*) FROM readings {where}")
        except psycopg.errors.UndefinedTable:
            rows = [(0,)]
        if rows and int(rows[0][0]) >= n:  # type: ignore[call-overload]
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {n} rows, found {rows}")
        await asyncio.sleep(0.05)


async def test_mqtt_json_reaches_database(tenant_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    prefix = f"p{uuid.uuid4().hex[:6]}"
    cfg = make_config(
        state_dir=state_dir,
        tenants=[{"slug": "acme", "dsn": tenant_db.dsn, "storage": {"tier": "auto"}}],
        sources=[mqtt_source(mosquitto, prefix)],
    )
    async with running_daemon(cfg) as d:
        ts = int(time.time() * 1000)
        await publish(mosquitto, [
            (f"{prefix}/acme/wells/w1/tubing_pressure", {"ts": ts, "value": 812.5}),
            (f"{prefix}/acme/wells/w1/casing_pressure", {"ts": ts, "value": 40}),
            (f"{prefix}/acme/wells/w2/tubing_pressure", {"ts": ts + 1000, "value": None}),
        ])
        await wait_rows(tenant_db, 3)
        tier = d.tenants["acme"].tier
    assert tier is not None and tier.value == tenant_db.tier
    rows = tenant_db.query(
        "SELECT t.name, r.value, r.quality, (extract(epoch from r.ts) * 1000)::bigint FROM readings r "
        "JOIN tags t USING (tag_id) ORDER BY t.name")
    assert rows == [
        ("w1.casing_pressure", 40.0, 0, ts),
        ("w1.tubing_pressure", 812.5, 0, ts),
        ("w2.tubing_pressure", None, 2, ts + 1000),
    ]
