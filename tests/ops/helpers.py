"""Small helpers of the operations tests (waiting on conditions, MQTT sources per topic prefix)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from tests.support.daemon import ROOT
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port


async def eventually(pred: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll a condition (cheap, in-process or a quick query) until it is truthy; fail with ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


def mqtt(name: str, broker: Mosquitto, topic: str, *, client_id: str, tenant: str | None = None,
         **extra: Any) -> dict[str, Any]:
    """An MQTT JSON source on ``topic`` (a template such as ``"p1/steady/{well}/{tag}"``)."""
    src: dict[str, Any] = {
        "name": name, "protocol": "mqtt",
        "connection": {"host": "127.0.0.1", "port": broker.port, "client_id": client_id},
        "subscriptions": [{"topic": topic, "tag": "{well}.{tag}"}],
        "backoff_initial": "50ms", "backoff_max": "500ms",
    }
    if tenant is not None:
        src["tenant"] = tenant
    src.update(extra)
    return src


def count(db: Any, where: str = "") -> int:
    """Rows in a tenant database's readings (0 before the schema exists)."""
    try:
        return int(db.query(f"SELECT count(*) FROM readings {where}")[0][0])
    except Exception:  # the writer creates the schema on its first batch
        return 0


@contextlib.asynccontextmanager
async def start_simulator(workdir: Path, protocols: list[str], *, wells: int = 2,
                          mqtt_port: int = 1) -> AsyncIterator[dict[str, Any]]:
    """``python -m simulator`` on free ports, no comm faults; yields its ready file (ports)."""
    ready = workdir / "simulator.json"
    argv = [sys.executable, "-m", "simulator", "--wells", str(wells), "--protocols", ",".join(protocols),
            "--modbus-port", str(free_port()), "--opcua-port", str(free_port()), "--mqtt-port", str(mqtt_port),
            "--no-faults", "--ready-file", str(ready), "--interval", "0.2"]
    with (workdir / "simulator.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        await eventually(lambda: ready.exists() or proc.returncode is not None, "the simulator ready", timeout=30)
        assert proc.returncode is None, (workdir / "simulator.log").read_text()
        yield json.loads(ready.read_text())
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
