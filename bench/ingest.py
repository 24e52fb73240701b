"""Ingest benchmark: MQTT JSON (100 values per message) → ingestd → TimescaleDB, against raw COPY.

    .venv/bin/python bench/ingest.py [--quick] [--rate 50000] [--seconds 30] [--points 2000000]

Three phases on one machine (database with fsync on, Mosquitto and ingestd as separate processes):

1. latency: publish at ``--rate`` points/s for ``--seconds``; latency = ingest_batches.committed_at
   (stamped just before COMMIT) − source timestamp, per reading → p50/p99;
2. throughput: ``--points`` readings are queued in the broker for ingestd's persistent session while
   it is stopped, then ingestd starts and drains them: committed points/s from first to last commit;
3. ceiling: a server-side binary ``COPY readings FROM '<file>'`` of the same number of rows into the
   same table (same indexes) → copy_points_per_s.

Prints one JSON object on its last line: points_per_s, copy_points_per_s, ratio_vs_copy,
p50_latency_s, p99_latency_s (+ context).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import paho.mqtt.client as paho

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingestd.storage.copy import encode_readings  # noqa: E402
from tests.support.daemon import DaemonProcess, make_config  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402
from tests.support.pg import PgServer  # noqa: E402

VALUES_PER_MSG = 100


def publisher(port: int, client_id: str) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def message(gw: int, ts_ms: int, seq: int) -> bytes:
    return orjson.dumps({"ts": ts_ms, "values": {f"t{i:03d}": float(seq + i) for i in range(VALUES_PER_MSG)}})


def publish_at_rate(port: int, rate: float, seconds: float, gateways: int, t_offset_ms: int = 0) -> int:
    c = publisher(port, "bench-pub-rate")
    msgs_per_s = rate / VALUES_PER_MSG
    total = int(msgs_per_s * seconds)
    start = time.monotonic()
    last = None
    for i in range(total):
        due = start + i / msgs_per_s
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ts = int(time.time() * 1000) + t_offset_ms
        # unique timestamps per gateway: one message per gateway per ms at most
        last = c.publish(f"bench/gw{i % gateways}", message(i % gateways, ts * 1000 + i // gateways, i), qos=1)
    if last is not None:
        last.wait_for_publish(60)
    c.loop_stop()
    c.disconnect()
    return total * VALUES_PER_MSG


def publish_backlog(port: int, points: int, gateways: int, t0_us: int) -> int:
    c = publisher(port, "bench-pub-backlog")
    n = points // VALUES_PER_MSG
    last = None
    for i in range(n):
        last = c.publish(f"bench/gw{i % gateways}", orjson.dumps(
            {"ts": t0_us + i, "values": {f"t{j:03d}": float(i + j) for j in range(VALUES_PER_MSG)}}), qos=1)
        if i % 2000 == 0:
            last.wait_for_publish(60)
    if last is not None:
        last.wait_for_publish(120)
    c.loop_stop()
    c.disconnect()
    return n * VALUES_PER_MSG


def wait_count(pg: PgServer, db: str, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = int(pg.execute("SELECT count(*) FROM readings", db)[0][0])  # type: ignore[arg-type]
        if got >= n:
            return got
        time.sleep(0.5)
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rate", type=float, default=50_000)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--gateways", type=int, default=50)
    args = ap.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    points = args.points or (500_000 if args.quick else 3_000_000)

    pg = PgServer(timescaledb=True, fsync=True)
    pg.start()
    broker = Mosquitto()
    broker.start()
    db = pg.create_database("bench")
    state = Path(tempfile.mkdtemp(prefix="ingestd-bench-"))
    cfg = make_config(
        state_dir=state,
        tenants=[{"slug": "bench", "dsn": pg.dsn(db)}],
        sources=[{
            "name": "mqtt", "protocol": "mqtt",
            "connection": {"host": "127.0.0.1", "port": broker.port, "client_id": "ingestd-bench",
                           "receive_maximum": 5000},
            "subscriptions": [{"topic": "bench/{gw}", "tag": "{gw}.{key}", "values_path": "values",
                               "timestamp_path": "ts", "timestamp_unit": "auto"}],
        }],
        daemon={"log_level": "warning"},
    )
    proc = DaemonProcess(cfg)
    result: dict[str, object] = {"bench": "ingest", "quick": args.quick, "values_per_message": VALUES_PER_MSG}
    try:
        # ---- phase 1: latency at a steady rate
        proc.start()
        time.sleep(2)  # let the source connect and subscribe (bench only)
        sent = publish_at_rate(broker.port, args.rate, seconds, args.gateways)
        got = wait_count(pg, db, sent, 120)
        lat = pg.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.99) WITHIN GROUP (ORDER BY l),"
            " max(l) FROM (SELECT extract(epoch FROM b.committed_at - r.ts) AS l FROM readings r "
            "JOIN ingest_batches b ON b.seq = r.batch_seq) x", db)[0]
        result.update(rate=args.rate, seconds=seconds, latency_points=got, p50_latency_s=round(float(lat[0]), 4),
                      p99_latency_s=round(float(lat[1]), 4), max_latency_s=round(float(lat[2]), 4))
        # ---- phase 2: throughput draining a backlog queued for the persistent session
        proc.terminate()
        base = got
        t0_us = int((time.time() - 7 * 86400) * 1e6)
        queued = publish_backlog(broker.port, points, args.gateways, t0_us)
        proc.start()
        total = wait_count(pg, db, base + queued, 600)
        span = pg.execute(
            "SELECT extract(epoch FROM max(committed_at) - min(committed_at)), sum(rows) FROM ingest_batches "
            "WHERE max_ts < now() - interval '1 day'", db)[0]
        drained = int(span[1] or 0)
        points_per_s = drained / float(span[0]) if span[0] else 0.0
        rss = None
        try:
            import psutil

            rss = psutil.Process(proc.proc.pid).memory_info().rss / 2**20 if proc.proc else None
        except Exception:
            pass
        proc.terminate()
        result.update(backlog_points=queued, stored=total - base, points_per_s=round(points_per_s),
                      ingestd_rss_mb=round(rss, 1) if rss else None)
        # ---- phase 3: raw server-side binary COPY of the same number of rows into the same table
        tags = pg.execute("SELECT tag_id FROM tags ORDER BY tag_id", db)
        tag_ids = np.array([t[0] for t in tags], np.int32)
        n = drained
        k = tag_ids[np.arange(n) % len(tag_ids)]
        ts = int((time.time() - 30 * 86400) * 1e6) + np.arange(n, dtype=np.int64)
        buf = encode_readings(k, ts, np.arange(n, dtype=np.float64), np.zeros(n, np.uint8), np.zeros(n, np.uint32), 0)
        path = Path(tempfile.mkdtemp(prefix="ingestd-copy-")) / "rows.bin"
        path.write_bytes(buf)
        os.chmod(path.parent, 0o755)
        os.chmod(path, 0o644)
        t = time.perf_counter()
        pg.execute(f"COPY readings (tag_id, ts, value, quality, status, batch_seq) FROM '{path}' (FORMAT binary)", db)
        copy_s = time.perf_counter() - t
        shutil.rmtree(path.parent, ignore_errors=True)
        copy_pps = n / copy_s
        result.update(copy_points=n, copy_points_per_s=round(copy_pps),
                      ratio_vs_copy=round(points_per_s / copy_pps, 3) if copy_pps else None)
    finally:
        proc.kill()
        broker.close()
        pg.close()
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(asyncio.sleep(0))
    main()
