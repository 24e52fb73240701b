"""The daemon end to end: SIGTERM flush, persistent MQTT sessions, malformed input, tenant isolation,
metrics."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path

import aiomqtt
import orjson
import pytest

from tests.conftest import TenantDb
from tests.integration.test_mqtt_to_db import mqtt_source, publish, wait_rows
from tests.support.daemon import DaemonProcess, make_config, running_daemon, scrape
from tests.support.mosquitto import Mosquitto
from tests.support.pg import PgServer
from tests.support.wait import eventually


def metric(text: str, metric_name: str, **labels: str) -> float:
    name = metric_name
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    if not found:
        raise KeyError(f"{name}{labels} not in metrics")
    return total


async def wait_metric(port: int, metric_name: str, value: float, timeout: float = 20, **labels: str) -> None:
    name = metric_name
    deadline = time.monotonic() + timeout
    while True:
        try:
            if metric(await asyncio.to_thread(scrape, port), name, **labels) >= value:
                return
        except KeyError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} did not reach {value}")
        await asyncio.sleep(0.05)


def points(prefix: str, n: int, t0: int) -> list[tuple[str, object]]:
    return [(f"{prefix}/acme/wells/w{i % 10}/p", {"ts": t0 + i, "value": float(i)}) for i in range(n)]


async def test_sigterm_flushes_inboxes(apache_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    prefix = f"s{uuid.uuid4().hex[:6]}"
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": apache_db.dsn}],
                      sources=[mqtt_source(mosquitto, prefix)],
                      pipeline={"batch_max_age": "30s", "batch_max_rows": 100000})
    proc = DaemonProcess(cfg)
    proc.start()
    try:
        await wait_metric(int(proc.runtime["metrics_port"]), "ingestd_source_up", 1, source="field")
        n = 1500
        await publish(mosquitto, points(prefix, n, int(time.time() * 1000)))
        await wait_metric(int(proc.runtime["metrics_port"]), "ingestd_points_received_total", n)
        # nothing is committed yet: the batcher waits 30 s or 100k rows
        assert apache_db.query("SELECT count(*) FROM readings")[0][0] == 0
        rc = await asyncio.to_thread(proc.terminate)
    finally:
        proc.kill()
    assert rc == 0, proc.log_tail()
    assert apache_db.query("SELECT count(*) FROM readings")[0][0] == n
    assert "ingestd stopped" in proc.log_tail()


async def test_persistent_session_keeps_messages_while_daemon_is_down(
        tenant_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    prefix = f"q{uuid.uuid4().hex[:6]}"
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": tenant_db.dsn}],
                      sources=[mqtt_source(mosquitto, prefix)])
    t0 = int(time.time() * 1000)
    async with running_daemon(cfg):
        await publish(mosquitto, points(prefix, 10, t0))
        await wait_rows(tenant_db, 10)
    # ingestd is down: the broker queues QoS 1 messages for its persistent session
    await publish(mosquitto, points(prefix, 200, t0 + 1000))
    async with running_daemon(cfg):
        await wait_rows(tenant_db, 210)
    assert tenant_db.query("SELECT count(DISTINCT (tag_id, ts)) FROM readings")[0][0] == 210


async def test_malformed_input_is_counted_and_never_stops_the_daemon(
        apache_db: TenantDb, mosquitto: Mosquitto, state_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    prefix = f"m{uuid.uuid4().hex[:6]}"
    src = mqtt_source(mosquitto, prefix, max_payload=2000)
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": apache_db.dsn}], sources=[src])
    caplog.set_level("WARNING")
    now = int(time.time() * 1000)
    async with running_daemon(cfg) as d:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            for payload in (b"{oops", b"{oops again", b'{"value": "NaN"}', b'{"value": "abc"}', b"x" * 5000,
                            b'{"value": 1, "ts": 99999999999999999999}'):
                await c.publish(f"{prefix}/acme/wells/w1/p", payload, qos=1)
            await c.publish(f"{prefix}/other/wells/w1/p", orjson.dumps({"value": 1}), qos=1)  # unknown tenant
            await c.publish(f"{prefix}/acme/wells/w1/p", orjson.dumps({"ts": now, "value": 7}), qos=1)
        await wait_rows(apache_db, 1)
        text = d.metrics.render().decode()
        assert d.sources["field"].runner is not None and d.sources["field"].runner.attempts == 1
        # dead letters are written with the next batch
        await wait_rows(apache_db, 1)
    for reason, n in [("bad_json", 2), ("not_finite", 1), ("non_numeric_value", 1), ("oversized", 1),
                      ("timestamp_out_of_range", 1), ("unknown_tenant", 1)]:
        assert metric(text, "ingestd_malformed_total", source="field", reason=reason) == n, reason
    logged = [r.getMessage() for r in caplog.records if "bad_json" in r.getMessage()]
    assert len(logged) == 1, "logged once per topic and reason"
    assert apache_db.query("SELECT value FROM readings") == [(7.0,)]
    reasons = {r[0] for r in apache_db.query("SELECT reason FROM dead_letters")}
    assert {"bad_json", "oversized", "not_finite", "unknown_tenant"} <= reasons


async def test_dead_tenant_database_never_slows_another(
        apache_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    dead = PgServer(timescaledb=True)
    dead.start()
    dead_name = dead.create_database()
    prefix = f"d{uuid.uuid4().hex[:6]}"
    src = mqtt_source(mosquitto, prefix)
    cfg = make_config(
        state_dir=state_dir,
        tenants=[{"slug": "acme", "dsn": apache_db.dsn},
                 {"slug": "dead", "dsn": dead.dsn(dead_name), "pool": {"connect_timeout": "2s"}}],
        sources=[{**src, "tenant": "acme"}],
    )
    try:
        async with running_daemon(cfg) as d:
            dead.stop("immediate")
            t0 = int(time.time() * 1000)
            msgs = []
            for i in range(20):
                msgs.append((f"{prefix}/dead/wells/w1/p", {"ts": t0 + i, "value": i}))
                msgs.append((f"{prefix}/acme/wells/w1/p", {"ts": t0 + i, "value": i}))
            started = time.monotonic()
            await publish(mosquitto, msgs)
            await wait_rows(apache_db, 20)
            healthy_latency = time.monotonic() - started
            # the dead tenant's readings went to its spool, the healthy one's to the database
            await eventually(lambda: d.tenants["dead"].spool.stats.rows >= 20, what="dead tenant's spool")
            assert healthy_latency < 3.0, healthy_latency
            assert d.tenants["acme"].spool.stats.rows == 0
            # the database comes back: the spool is replayed, exactly once
            dead.start()
            def replayed() -> bool:
                try:
                    return int(dead.execute("SELECT count(*) FROM readings", dead_name)[0][0]) >= 20  # type: ignore[call-overload]
                except Exception:
                    return False

            await eventually(replayed, timeout=30, what="replay into the restarted database")
            assert dead.execute("SELECT count(DISTINCT ts) FROM readings", dead_name)[0][0] == 20
            await eventually(lambda: d.tenants["dead"].spool.empty, what="spool emptied")
    finally:
        dead.close()


async def test_metrics_endpoint_exposes_the_pipeline(apache_db: TenantDb, mosquitto: Mosquitto,
                                                     state_dir: Path) -> None:
    prefix = f"x{uuid.uuid4().hex[:6]}"
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": apache_db.dsn}],
                      sources=[mqtt_source(mosquitto, prefix)])
    async with running_daemon(cfg) as d:
        await publish(mosquitto, points(prefix, 30, int(time.time() * 1000)))
        await wait_rows(apache_db, 30)
        assert d.metrics_port is not None
        text = await asyncio.to_thread(scrape, d.metrics_port)
    assert metric(text, "ingestd_points_received_total", tenant="acme", source="field") == 30
    assert metric(text, "ingestd_points_written_total", tenant="acme", source="field") == 30
    assert metric(text, "ingestd_storage_tier", tenant="acme", tier="apache") == 2
    assert metric(text, "ingestd_source_up", source="field") == 1
    assert metric(text, "ingestd_breaker_state", kind="tenant_db", name="acme") == 0
    assert metric(text, "ingestd_inbox_capacity_rows", tenant="acme") == 200_000
    for name in ("ingestd_batch_rows_bucket", "ingestd_write_seconds_bucket", "ingestd_ingest_latency_seconds_bucket",
                 "ingestd_inbox_rows", "ingestd_spool_bytes", "ingestd_tenant_db_up"):
        assert re.search(rf"^{name}\{{", text, re.M), name


async def test_heartbeat_and_stale_after_in_the_running_daemon(apache_db: TenantDb, mosquitto: Mosquitto,
                                                               state_dir: Path) -> None:
    """A report-by-exception tag gets its value stored again every heartbeat while its source is up; a
    tag that goes quiet for ``stale_after`` turns stale and gets no more heartbeats."""
    prefix = f"h{uuid.uuid4().hex[:6]}"
    src = mqtt_source(mosquitto, prefix, stale_after="3s",
                      tags=[{"name": "w1.p", "deadband": 100.0, "heartbeat": "1s"}])
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": apache_db.dsn}], sources=[src],
                      pipeline={"batch_max_age": "100ms"})
    async with running_daemon(cfg) as d:
        await publish(mosquitto, [(f"{prefix}/acme/wells/w1/p", {"ts": int(time.time() * 1000), "value": 5.0})])
        await wait_rows(apache_db, 3, timeout=10)
        reg = d.tenants["acme"].registry
        key = reg.index["w1.p"]
        await eventually(lambda: bool(reg.stale[key]), timeout=10, what="tag marked stale")
        n = apache_db.query("SELECT count(*) FROM readings")[0][0]
        await asyncio.sleep(1.5)  # a stale tag must not get heartbeats: nothing may arrive in this window
        assert apache_db.query("SELECT count(*) FROM readings")[0][0] == n
    values = {r[0] for r in apache_db.query("SELECT value FROM readings")}
    assert values == {5.0}


async def test_rotated_dsn_secret_reconnects_on_reload(apache_db: TenantDb, mosquitto: Mosquitto,
                                                       state_dir: Path, tmp_path: Path) -> None:
    from tests.support.daemon import parse

    other = apache_db.server.create_database()
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(apache_db.dsn + "\n")
    prefix = f"r{uuid.uuid4().hex[:6]}"
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": f"file:{dsn_file}"}],
                      sources=[mqtt_source(mosquitto, prefix)])
    try:
        async with running_daemon(cfg) as d:
            await publish(mosquitto, points(prefix, 5, int(time.time() * 1000)))
            await wait_rows(apache_db, 5)
            dsn_file.write_text(apache_db.server.dsn(other) + "\n")  # the secret rotates; the config text does not
            await d.apply_config(parse(cfg))
            await publish(mosquitto, points(prefix, 7, int(time.time() * 1000) + 10_000))
            from tests.conftest import TenantDb as Db

            await wait_rows(Db("apache", apache_db.server, other), 7)
    finally:
        apache_db.server.drop_database(other)
