"""Alarm engine benchmark: ingest throughput with 25 % of the tags carrying alarm rules vs none, and the
latency from an alarm condition to the webhook POST.

    .venv/bin/python bench/alarms.py [--quick] [--points 1000000] [--alarms 20]

Same harness as bench/ingest.py (database with fsync on, Mosquitto and ingestd as separate processes; MQTT
JSON with 100 values per message from 50 gateways = 5000 tags):

1. throughput, per round and configuration (fresh database each; 3 rounds, alternating; 1 with --quick):
   ``--points`` readings are queued in the broker for ingestd's persistent session while it is stopped, then
   ingestd starts and drains them; committed points/s from first to last commit. Configuration A has no
   alarm rules; configuration B has limit rules (HI/LO, deadband) on 25 % of the tags (1250 alarms) plus a
   comm-loss rule and a Teams route — the realistic steady state where values move but stay within limits.
   ``throughput_ratio`` = B / A (medians of the rounds; ``throughput_ratio_best`` compares the best runs);
   ``cpu_ratio`` = ingestd CPU time per point A / B (median; robust when other work shares the machine).
2. notification latency (configuration B running): ``--alarms`` tags cross HI one after another (1.2 s apart,
   below the 1 request/s webhook budget; no on-delay, ``group_wait = 0``; flood mode off so that no summary
   card takes the webhook's budget); latency = publish of the crossing value → POST received by a local HTTP
   server (the fake Teams Workflows endpoint) → ``notify_p50_s`` / ``notify_p95_s`` / ``notify_max_s``.

Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import paho.mqtt.client as paho
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.alarms.teams_server import FakeTeams  # noqa: E402
from tests.support.daemon import DaemonProcess, make_config  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402
from tests.support.pg import PgServer  # noqa: E402

VALUES_PER_MSG = 100
GATEWAYS = 50
# 25 of the 100 tags of every gateway: t000-t019 and t020-t024
RULE_TAGS = ["gw*.t0[0-1]?", "gw*.t02[0-4]"]


def publisher(port: int, client_id: str) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def publish_backlog(port: int, points: int, t0_us: int) -> int:
    """Values wander within ±50 around 500 per tag (inside every limit): the steady state."""
    c = publisher(port, f"bench-pub-{time.monotonic_ns()}")
    n = points // VALUES_PER_MSG
    last = None
    for i in range(n):
        values = {f"t{j:03d}": 500.0 + ((i * 7 + j * 13) % 100) - 50.0 for j in range(VALUES_PER_MSG)}
        last = c.publish(f"bench/gw{i % GATEWAYS}", orjson.dumps({"ts": t0_us + i, "values": values}), qos=1)
        if i % 2000 == 0:
            last.wait_for_publish(60)
    if last is not None:
        last.wait_for_publish(120)
    c.loop_stop()
    c.disconnect()
    return n * VALUES_PER_MSG


def config(state: Path, dsn: str, broker: Mosquitto, client_id: str, webhook: str | None) -> dict[str, Any]:
    cfg = make_config(
        state_dir=state,
        tenants=[{"slug": "bench", "dsn": dsn}],
        sources=[{
            "name": "mqtt", "protocol": "mqtt",
            "connection": {"host": "127.0.0.1", "port": broker.port, "client_id": client_id, "receive_maximum": 5000},
            "subscriptions": [{"topic": "bench/{gw}", "tag": "{gw}.{key}", "values_path": "values",
                               "timestamp_path": "ts", "timestamp_unit": "auto"},
                              {"topic": "lat/{tag}", "tag": "lat.{tag}"}],
        }],
        daemon={"log_level": "warning"},
    )
    cfg["api"] = {"listen": "127.0.0.1:0", "public_url": "https://ingestd.example.com",
                  "link_secret": "0123456789abcdef0123456789abcdef"}
    if webhook is not None:
        cfg["alarms"] = {
            "rules": [
                {"name": "bench", "kind": "limit", "tags": RULE_TAGS, "priority": "low",
                 "hi": {"setpoint": 1000.0, "deadband": 10.0}, "lo": {"setpoint": 100.0, "deadband": 10.0}},
                {"name": "lat", "kind": "limit", "tags": ["lat.*"], "priority": "high",
                 "hi": {"setpoint": 100.0, "deadband": 5.0}},
                {"name": "comms", "kind": "comm_loss", "sources": ["mqtt"]},
            ],
            # flood summaries would share the webhook's 1 request/s budget with the measured cards
            "defaults": {"flood": {"start": 10000, "end": 5000}},
            "routes": [{"name": "oncall", "tenant": "bench", "webhook": webhook, "group_wait": "0s",
                        "group_by": "alarm", "repeat_interval": "1h"}],
        }
    else:
        cfg["alarms"] = {"enabled": True}
    return cfg


def drain_rate(pg: PgServer, db: str) -> tuple[int, float]:
    span = pg.execute("SELECT extract(epoch FROM max(committed_at) - min(committed_at)), sum(rows) "
                      "FROM ingest_batches WHERE max_ts < now() - interval '1 day'", db)[0]
    drained = int(span[1] or 0)
    return drained, drained / float(span[0]) if span[0] else 0.0


async def wait_count(pg: PgServer, db: str, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = int((await asyncio.to_thread(pg.execute, "SELECT count(*) FROM readings", db))[0][0])  # type: ignore[arg-type]
        if got >= n:
            return got
        await asyncio.sleep(0.5)
    return got


def metric(text: str, name: str, **labels: str) -> float:
    lab = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # the exposition sorts label names
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(lab)}\}} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def throughput(pg: PgServer, broker: Mosquitto, points: int, webhook: str | None, tag: str) -> dict[str, Any]:
    db = pg.create_database(f"bench_{tag}")
    state = Path(tempfile.mkdtemp(prefix="ingestd-bench-"))
    client_id = f"ingestd-bench-{tag}"
    proc = DaemonProcess(config(state, pg.dsn(db), broker, client_id, webhook))
    try:
        await asyncio.to_thread(proc.start)  # creates the persistent session and the schema
        await wait_schema(pg, db)
        await asyncio.to_thread(proc.terminate)
        t0_us = int((time.time() - 7 * 86400) * 1e6)
        queued = await asyncio.to_thread(publish_backlog, broker.port, points, t0_us)
        await asyncio.to_thread(proc.start)
        await wait_count(pg, db, queued, 900)
        cpu = None
        if proc.proc is not None:
            t = psutil.Process(proc.proc.pid).cpu_times()
            cpu = t.user + t.system
        drained, pps = await asyncio.to_thread(drain_rate, pg, db)
        text = await asyncio.to_thread(proc.metrics)
        out: dict[str, Any] = {"points": drained, "points_per_s": round(pps),
                               "cpu_us_per_point": round(cpu / queued * 1e6, 3) if cpu else None}
        if webhook is not None:
            out["alarm_samples_fast"] = metric(text, "ingestd_alarm_samples_total", tenant="bench", path="fast")
            out["alarm_samples_slow"] = metric(text, "ingestd_alarm_samples_total", tenant="bench", path="slow")
            out["alarms_configured"] = metric(text, "ingestd_alarms_configured", tenant="bench")
        return out
    finally:
        proc.kill()
        pg.drop_database(db)
        shutil.rmtree(state, ignore_errors=True)


async def wait_schema(pg: PgServer, db: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = await asyncio.to_thread(pg.execute, "SELECT to_regclass('notification_outbox') IS NOT NULL", db)
        if rows and rows[0][0]:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("schema not migrated")


async def latency(pg: PgServer, broker: Mosquitto, teams: FakeTeams, n: int) -> dict[str, Any]:
    db = pg.create_database("bench_latency")
    state = Path(tempfile.mkdtemp(prefix="ingestd-bench-"))
    proc = DaemonProcess(config(state, pg.dsn(db), broker, "ingestd-bench-latency", teams.url))
    lat: list[float] = []
    try:
        await asyncio.to_thread(proc.start)
        await wait_schema(pg, db)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-lat-pub") as c:
            for i in range(n):  # a normal value first (the tag appears), then the crossing
                await c.publish(f"lat/x{i}", orjson.dumps({"ts": int(time.time() * 1000), "value": 50.0}), qos=1)
            await wait_count(pg, db, n, 60)
            for i in range(n):
                t0 = time.monotonic()
                await c.publish(f"lat/x{i}", orjson.dumps({"ts": int(time.time() * 1000), "value": 150.0}), qos=1)
                mine = f"lat.x{i} ".encode()
                while not any(mine in r.body for r in teams.requests):
                    await teams.wait_requests(len(teams.requests) + 1, timeout=30)
                lat.append(next(r.at for r in teams.requests if mine in r.body) - t0)
                await asyncio.sleep(max(0.0, 1.2 - (time.monotonic() - t0)))  # pacing: the 1 request/s budget
    finally:
        proc.kill()
        pg.drop_database(db)
        shutil.rmtree(state, ignore_errors=True)
    lat.sort()
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    return {"notify_samples": len(lat), "notify_p50_s": round(statistics.median(lat), 4),
            "notify_p95_s": round(p95, 4), "notify_max_s": round(lat[-1], 4)}


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    points = args.points or (500_000 if args.quick else 1_000_000)
    rounds = 1 if args.quick else 3
    n_alarms = args.alarms or (10 if args.quick else 20)
    pg = PgServer(timescaledb=True, fsync=True)
    pg.start()
    broker = Mosquitto()
    broker.start()
    result: dict[str, Any] = {"bench": "alarms", "quick": args.quick, "values_per_message": VALUES_PER_MSG,
                              "tags": VALUES_PER_MSG * GATEWAYS, "tags_with_rules_pct": 25}
    try:
        async with FakeTeams() as teams:
            base: list[dict[str, Any]] = []
            rules: list[dict[str, Any]] = []
            for r in range(rounds):
                base.append(await throughput(pg, broker, points, None, f"none{r}"))
                rules.append(await throughput(pg, broker, points, teams.url, f"rules{r}"))
            best_base = max(b["points_per_s"] for b in base)
            best_rules = max(b["points_per_s"] for b in rules)
            med_base = statistics.median(b["points_per_s"] for b in base)
            med_rules = statistics.median(b["points_per_s"] for b in rules)
            cpu_base = statistics.median(b["cpu_us_per_point"] or 0.0 for b in base)
            cpu_rules = statistics.median(b["cpu_us_per_point"] or 0.0 for b in rules)
            result.update(points=points, rounds=rounds, points_per_s_no_rules=best_base,
                          points_per_s_with_rules=best_rules,
                          throughput_ratio=round(med_rules / med_base, 3) if med_base else None,
                          throughput_ratio_best=round(best_rules / best_base, 3) if best_base else None,
                          runs_no_rules=[b["points_per_s"] for b in base],
                          runs_with_rules=[b["points_per_s"] for b in rules],
                          cpu_us_per_point_no_rules=cpu_base, cpu_us_per_point_with_rules=cpu_rules,
                          cpu_ratio=round(cpu_base / cpu_rules, 3) if cpu_rules else None,
                          alarm_samples_fast=rules[-1].get("alarm_samples_fast"),
                          alarm_samples_slow=rules[-1].get("alarm_samples_slow"),
                          alarms_configured=rules[-1].get("alarms_configured"),
                          cards_during_throughput=len(teams.requests))
            teams.requests.clear()
            result.update(await latency(pg, broker, teams, n_alarms))
    finally:
        broker.close()
        pg.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--alarms", type=int, default=None)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(amain(args))))


if __name__ == "__main__":
    main()
