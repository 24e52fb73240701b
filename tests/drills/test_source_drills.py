"""Source drills: the broker, a Modbus server and an OPC UA server restart under ingestd (a real
subprocess) → automatic recovery, and the outage window is recorded in ``source_status``.

The Modbus and OPC UA drills activate by themselves once those adapters are registered in
``adapters/registry.py`` (they are written concurrently); until then they are skipped with
"adapter not registered yet".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from adapters.registry import REGISTRY
from tests.conftest import TenantDb
from tests.support.daemon import DaemonProcess
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port
from tests.support.wait import eventually_sync

from .conftest import daemon_process, drill_config
from .servers import OPCUA_NS, DeviceServer
from .support import AckingPublisher, metric, metrics_of, verify_exactly_once


def windows(db: TenantDb, source: str) -> list[tuple[Any, ...]]:
    try:
        return db.query(f"SELECT down_at, up_at, reason FROM source_status WHERE source = '{source}' ORDER BY id")
    except Exception:  # not migrated yet
        return []


def closed_window(db: TenantDb, source: str) -> bool:
    return any(up is not None and up >= down for down, up, _ in windows(db, source))


def rows_of(db: TenantDb, prefix: str, since: float = 0.0) -> int:
    try:
        return int(db.query(  # type: ignore[call-overload]
            f"SELECT count(*) FROM readings r JOIN tags t USING (tag_id) WHERE t.name LIKE '{prefix}%' "
            f"AND r.ts >= to_timestamp({since})")[0][0])
    except Exception:
        return 0


def test_broker_restart_recovers_and_records_the_outage(apache_db: TenantDb, broker: Mosquitto, state_dir: Path,
                                                        prefix: str) -> None:
    cfg = drill_config(state_dir, [{"slug": "acme", "dsn": apache_db.dsn}], broker, prefix)
    pub = AckingPublisher(broker.port, prefix, values=20)
    try:
        with daemon_process(cfg) as proc:
            eventually_sync(lambda: metric(metrics_of(proc), "ingestd_source_up", source="field") == 1)
            pub.start_steady(2000)
            eventually_sync(lambda: rows_of(apache_db, "gw") > 0, what="data flowing")
            broker.restart()  # clean stop: the broker persists both persistent sessions and queued messages
            restarted = time.time()
            eventually_sync(lambda: closed_window(apache_db, "field"), timeout=30, what="outage window closed")
            eventually_sync(lambda: rows_of(apache_db, "gw", restarted + 1) > 0, what="data after the restart")
            pub.stop()
            pub.wait_acked()
            eventually_sync(lambda: rows_of(apache_db, "gw") >= len(pub.acked) * pub.values, timeout=30,
                            what="every acknowledged reading stored")
            text = metrics_of(proc)
    finally:
        pub.close()
    assert metric(text, "ingestd_source_restarts_total", source="field") >= 1
    assert metric(text, "ingestd_source_up", source="field") == 1
    v = verify_exactly_once(apache_db.server, apache_db.name, pub)
    assert v.ok, (v.lost_messages[:5], v.partial_messages[:5], v.phantom_messages, v.duplicated_rows)


def _device_drill(db: TenantDb, broker: Mosquitto, state_dir: Path, prefix: str, kind: str,
                  source: dict[str, Any]) -> None:
    server = DeviceServer(kind, free_port())
    server.start()
    cfg = drill_config(state_dir, [{"slug": "acme", "dsn": db.dsn}], broker, prefix)
    src = {"name": "dev", "tenant": "acme", "backoff_initial": "100ms", "backoff_max": "1s", "breaker_reset": "1s",
           **source}
    src = {k: (v.replace("PORT", str(server.port)) if isinstance(v, str) else v) for k, v in src.items()}
    if kind == "modbus":
        src["port"] = server.port
    cfg["sources"] = [src]
    proc: DaemonProcess
    try:
        with daemon_process(cfg) as proc:
            eventually_sync(lambda: rows_of(db, "dev.") > 0, timeout=30, what=f"{kind} readings")
            server.stop()
            eventually_sync(lambda: any(up is None for _, up, _ in windows(db, "dev")), timeout=30,
                            what="outage window opened")
            server.start()
            back = time.time()
            eventually_sync(lambda: closed_window(db, "dev"), timeout=60, what="outage window closed")
            eventually_sync(lambda: rows_of(db, "dev.", back) > 0, timeout=30, what="readings after the restart")
            assert metric(metrics_of(proc), "ingestd_source_restarts_total", source="dev") >= 1
    finally:
        server.stop()
    (down, up, reason), *_ = [w for w in windows(db, "dev") if w[1] is not None]
    assert up > down
    assert reason


@pytest.mark.skipif("modbus" not in REGISTRY, reason="adapter not registered yet")
def test_modbus_server_restart_recovers_and_records_the_outage(apache_db: TenantDb, broker: Mosquitto,
                                                               state_dir: Path, prefix: str) -> None:
    _device_drill(apache_db, broker, state_dir, prefix, "modbus", {
        "protocol": "modbus", "host": "127.0.0.1", "unit_id": 1, "poll_interval": "200ms", "timeout": "500ms",
        "connect_timeout": "1s",
        "tags": [{"name": f"dev.r{i}", "address": i, "type": "uint16"} for i in range(5)],
    })


@pytest.mark.skipif("opcua" not in REGISTRY, reason="adapter not registered yet")
def test_opcua_server_restart_recovers_and_records_the_outage(apache_db: TenantDb, broker: Mosquitto,
                                                              state_dir: Path, prefix: str) -> None:
    _device_drill(apache_db, broker, state_dir, prefix, "opcua", {
        "protocol": "opcua", "endpoint": "opc.tcp://127.0.0.1:PORT", "mode": "polling",
        "polling": {"interval": "200ms"}, "connect_timeout": "2s", "request_timeout": "1s",
        "watchdog_interval": "1s",
        "tags": [{"name": f"dev.t{i}", "node_id": f"nsu={OPCUA_NS};s=T{i}"} for i in range(5)],
    })
