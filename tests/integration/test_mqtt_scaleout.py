"""Scale-out: two real ``ingestd run`` processes split one topic space through an MQTT 5 shared
subscription, one is SIGKILLed midway, and every published reading is stored exactly once.

Why this works (and what Mosquitto 2.0.11 does, verified empirically):

* QoS 1 + ``ack = "after_commit"``: a message is PUBACKed only once its reading is committed (or
  spooled), so nothing acknowledged is lost when a process dies;
* each process has its own fixed ``client_id`` and a persistent session (Clean Start = false,
  Session Expiry 7 d), both subscribed as ``$share/ingest/<filter>``;
* Mosquitto 2.0.11 keeps distributing the shared group round-robin over **all** member sessions,
  including a disconnected persistent one: messages sent to the killed member — its unacknowledged
  in-flight ones and about half of everything published while it is away — stay queued in *its*
  session and are delivered only when that client id reconnects (they are not re-dispatched to the
  surviving member, unlike EMQX/HiveMQ). So the killed process is restarted with the same client id
  before the check;
* redelivered messages that had already been committed hit the readings primary key (tag_id, ts)
  and the staging path's ON CONFLICT DO NOTHING: no duplicates.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import psycopg

from tests.conftest import TenantDb
from tests.support.daemon import DaemonProcess, make_config
from tests.support.mosquitto import Mosquitto

RATE = 100          # readings per second
DURATION = 10.0     # seconds of publishing
TAGS = 5


def process_config(name: str, root: Path, db: TenantDb, broker: Mosquitto, prefix: str) -> dict[str, Any]:
    return make_config(
        state_dir=root / name / "state",
        tenants=[{"slug": "acme", "dsn": db.dsn, "storage": {"tier": "auto"}}],
        daemon={"instance_id": name},
        sources=[{
            "name": "field", "protocol": "mqtt",
            "connection": {"host": "127.0.0.1", "port": broker.port, "client_id": f"ingestd-{prefix}-{name}",
                           "ack": "after_commit", "session_expiry": "1h"},
            "subscriptions": [{"topic": f"{prefix}/{{tag}}", "tag": "{tag}", "shared_group": "ingest", "qos": 1}],
        }],
    )


def received(proc: DaemonProcess) -> float:
    m = re.search(r'^ingestd_points_received_total\{[^}]*source="field"[^}]*\} (\S+)$', proc.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def source_up(proc: DaemonProcess) -> bool:
    return bool(re.search(r'^ingestd_source_up\{[^}]*source="field"[^}]*\} 1\.0$', proc.metrics(), re.M))


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)  # polling other processes (metrics endpoint, database)


def db_count(db: TenantDb) -> int:
    try:
        value = db.query("SELECT count(*) FROM readings")[0][0]
    except psycopg.errors.UndefinedTable:
        return 0
    assert isinstance(value, int)
    return value


async def plateau(db: TenantDb, quiet: float = 1.0, timeout: float = 20.0) -> int:
    """The reading count once it has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = await asyncio.to_thread(db_count, db)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return n
        await asyncio.sleep(0.1)  # polling the database written by other processes
    raise AssertionError("reading count never settled")


async def test_shared_subscription_split_survives_sigkill_exactly_once(
    apache_db: TenantDb, broker: Mosquitto, tmp_path: Path,
) -> None:
    prefix = f"so{uuid.uuid4().hex[:6]}"
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a = DaemonProcess(process_config("a", tmp_path, apache_db, broker, prefix), workdir=tmp_path / "a")
    b = DaemonProcess(process_config("b", tmp_path, apache_db, broker, prefix), workdir=tmp_path / "b")
    try:
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        await wait_until(lambda: source_up(a) and source_up(b), 20, "both processes subscribed")

        total = int(RATE * DURATION)
        base_ms = int(time.time() * 1000) - 120_000
        received_by_a = 0.0
        loop = asyncio.get_running_loop()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"pub-{prefix}") as pub:
            start = loop.time()
            for i in range(total):
                await asyncio.sleep(max(0.0, start + i / RATE - loop.time()))  # pacing a steady rate
                await pub.publish(f"{prefix}/t{i % TAGS}", orjson.dumps({"ts": base_ms + i, "value": i}), qos=1)
                if i == total // 2:
                    received_by_a = await asyncio.to_thread(received, a)
                    await asyncio.to_thread(a.kill)  # SIGKILL: no flush, no DISCONNECT
        assert received_by_a > 0, "process a got no share of the messages before it was killed"
        assert await asyncio.to_thread(received, b) > 0

        # Mosquitto holds the killed member's queued and in-flight messages until it comes back:
        # the survivor alone never completes the set
        stalled = await plateau(apache_db)
        assert stalled < total, "the broker re-dispatched the dead member's messages (update the docs)"
        await asyncio.to_thread(a.start)
        await wait_until(lambda: db_count(apache_db) >= total, 30, f"{total} readings in the database")

        rows = apache_db.query(
            "SELECT count(*), count(DISTINCT (tag_id, ts)), min(value), max(value), "
            "count(DISTINCT value) FROM readings")
        assert rows == [(total, total, 0.0, float(total - 1), total)]
        per_tag = apache_db.query(
            "SELECT t.name, count(*) FROM readings r JOIN tags t USING (tag_id) GROUP BY t.name ORDER BY t.name")
        assert per_tag == [(f"t{k}", total // TAGS) for k in range(TAGS)]
        assert await asyncio.to_thread(received, a) > 0  # the restarted member drained its session
    finally:
        for p in (a, b):
            if p.proc is not None:
                await asyncio.to_thread(p.terminate)
