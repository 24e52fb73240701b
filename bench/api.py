"""Benchmark: the query API on a tenant with 10,000 tags × 30 days of 1-minute data.

Starts a local TimescaleDB (Apache edition) through tests.support.pg and a Mosquitto broker, runs the
daemon in this process with the query API (port 0), then

1. writes ``--tags`` × ``--days`` of 1-minute readings straight into ``readings`` with SQL
   (``INSERT … SELECT generate_series``, one day per statement) and builds the rollups with
   ``ingestd.storage.rollups.rebuild_rollups`` (the module's repair path for data without a ledger),
   one day at a time; if the rollup module is absent the JSON says so and series read raw data;
2. publishes one live value for every tag over MQTT (the live cache is filled by the real pipeline);
3. measures ``GET /series`` for one random tag over 30 days at ``resolution=1h``
   (``series_30d_1h_p95_ms``, target < 50) and ``POST /latest`` for 1,000 random tags
   (``latest_1000_p95_ms``, target < 20), sequential requests over one keep-alive connection;
4. in a child process (so the load generator does not share the daemon's CPU time slice or loop),
   publishes ``--rate`` points/s over MQTT across all tags while ``--subscribers`` WebSocket clients
   each follow ``--tags-per-subscriber`` random tags, and measures the added latency of every value
   (client receive time − the daemon's receive time, ``recv_us`` in each message). A subscriber
   count is "held" when p99 < 200 ms, nothing was dropped and ingest kept up with the rate.

Prints progress on stderr and ONE JSON object on the last line of stdout.

    .venv/bin/python bench/api.py [--quick]

``--quick``: 1,000 tags × 7 days, 10 s of stream load (said in the JSON as ``"quick": true``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestd.api.server import ApiExtension
from ingestd.auth import hash_token, new_token
from ingestd.model import now_us
from tests.support.daemon import make_config, running_daemon
from tests.support.mosquitto import Mosquitto
from tests.support.pg import PgServer
from tests.support.wait import eventually

US = 1_000_000
DAY_US = 86_400 * US


def log(msg: str) -> None:
    print(f"[bench/api {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tag_name(i: int) -> str:
    return f"g{i // 100:03d}.t{i % 100:02d}"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# ---------------------------------------------------------------------------------------------- data


async def load_history(tp: Any, n_tags: int, days: int, now: int) -> dict[str, Any]:
    """1-minute readings for every tag over ``days`` (ending an hour ago), then the rollups."""
    end = now - now % 60_000_000 - 3600 * US
    start = end - days * DAY_US
    t0 = time.monotonic()
    async with tp.db.connection() as conn:
        await conn.execute(
            "INSERT INTO tags (name, source) SELECT format('g%s.t%s', lpad((i / 100)::text, 3, '0'), "
            "lpad((i % 100)::text, 2, '0')), 'field' FROM generate_series(0, $1 - 1) i ON CONFLICT (name) DO NOTHING",
            n_tags)
        for d in range(days):
            lo, hi = start + d * DAY_US, start + (d + 1) * DAY_US
            await conn.execute(
                "INSERT INTO readings (tag_id, ts, value, quality, status) "
                "SELECT t.tag_id, g, 500 + 50 * sin(extract(epoch FROM g) / 3600.0 + t.tag_id), "
                "CASE WHEN random() < 0.001 THEN 1 ELSE 0 END, 0 "
                "FROM tags t CROSS JOIN generate_series(to_timestamp($1 / 1e6), to_timestamp($2 / 1e6) "
                "- interval '1 minute', interval '1 minute') g WHERE t.source = 'field' "
                "ON CONFLICT DO NOTHING", lo, hi, timeout=3600)
            log(f"history: day {d + 1}/{days} written ({time.monotonic() - t0:.0f} s)")
    raw_s = time.monotonic() - t0
    rollups = "ingestd.storage.rollups.rebuild_rollups"
    t1 = time.monotonic()
    try:
        from ingestd.storage.rollups import rebuild_rollups
    except ImportError:
        rollups = "rollup module absent: series read raw readings"
    else:
        async with tp.db.connection() as conn:
            for d in range(days):
                lo, hi = start + d * DAY_US, start + (d + 1) * DAY_US
                await rebuild_rollups(conn, tp.tier, tp.cfg, lo, hi, now_us())
                log(f"rollups: day {d + 1}/{days} built ({time.monotonic() - t1:.0f} s)")
            await conn.execute("ANALYZE readings")
            for rel in ("readings_1m", "readings_1h", "readings_1d"):
                await conn.execute(f"ANALYZE {rel}")
    return {"rows": n_tags * days * 1440, "raw_load_s": round(raw_s, 1),
            "rollup_build_s": round(time.monotonic() - t1, 1), "rollups": rollups}


async def publish(port: int, prefix: str, n_tags: int, ts: int) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-{uuid.uuid4().hex[:6]}") as c:
        for well in range((n_tags + 99) // 100):
            items = [{"tag": f"t{k:02d}", "ts": ts, "value": float(k)} for k in range(min(100, n_tags - well * 100))]
            await c.publish(f"{prefix}/acme/g{well:03d}", orjson.dumps({"items": items}), qos=1)


# ---------------------------------------------------------------------------------------------- HTTP latency


async def http_bench(base: str, token: str, n_tags: int, n: int) -> dict[str, float]:
    rng = random.Random(7)
    out: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        series: list[float] = []
        points = 0
        for i in range(n + 10):
            tag = tag_name(rng.randrange(n_tags))
            t0 = time.perf_counter()
            r = await c.get("/v1/tenants/acme/series", params={"tag": tag, "start": "-30d", "resolution": "1h",
                                                               "max_points": 1000})
            dt = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            if i >= 10:  # warm-up excluded
                series.append(dt)
                points = len(r.json()["items"][0]["ts_us"])
        latest: list[float] = []
        for i in range(n + 10):
            tags = [tag_name(k) for k in rng.sample(range(n_tags), min(1000, n_tags))]
            t0 = time.perf_counter()
            r = await c.post("/v1/tenants/acme/latest", json={"tags": tags})
            dt = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            assert len(r.json()["items"]) == len(tags)
            if i >= 10:
                latest.append(dt)
    out.update(series_30d_1h_p50_ms=round(pct(series, 50), 2), series_30d_1h_p95_ms=round(pct(series, 95), 2),
               series_points=points, latest_1000_p50_ms=round(pct(latest, 50), 2),
               latest_1000_p95_ms=round(pct(latest, 95), 2))
    return out


# ---------------------------------------------------------------------------------------------- stream load (child)


async def ws_child(a: argparse.Namespace) -> None:
    """Subscribers + publisher in their own process; prints one JSON line of results."""
    import aiomqtt
    from websockets.asyncio.client import connect

    rng = random.Random(11)
    lat: list[float] = []
    server: list[float] = []
    dropped = 0
    received = 0
    stop = asyncio.Event()
    ready = 0
    all_ready = asyncio.Event()

    async def subscriber() -> None:
        nonlocal dropped, received, ready
        tags = [tag_name(k) for k in rng.sample(range(a.tags), a.tags_per_subscriber)]
        async with connect(f"ws://127.0.0.1:{a.api_port}/v1/tenants/acme/stream", max_size=1 << 24,
                           additional_headers={"Authorization": f"Bearer {a.token}"}) as ws:
            await ws.send(orjson.dumps({"type": "subscribe", "tags": tags}).decode())
            while orjson.loads(await ws.recv())["type"] != "snapshot":
                pass
            ready += 1
            if ready == a.subscribers:
                all_ready.set()
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                arrived = time.time_ns() // 1000
                msg = orjson.loads(raw)
                if msg["type"] == "values":
                    received += len(msg["recv_us"])
                    if measuring:
                        lat.extend((arrived - r) / 1000 for r in msg["recv_us"])
                        if "sent_us" in msg:
                            server.extend((msg["sent_us"] - r) / 1000 for r in msg["recv_us"])
                elif msg["type"] == "dropped":
                    dropped += msg["count"]

    measuring = False
    tasks = [asyncio.create_task(subscriber()) for _ in range(a.subscribers)]
    await asyncio.wait_for(all_ready.wait(), 120)
    wells = (a.tags + 99) // 100
    per_msg = min(100, a.tags)
    msgs_per_s = a.rate / per_msg
    published = 0
    async with aiomqtt.Client("127.0.0.1", a.mqtt_port, identifier=f"bench-pub-{uuid.uuid4().hex[:6]}",
                              max_queued_outgoing_messages=100_000) as c:
        t0 = time.monotonic()
        k = 0
        measuring = True
        while (elapsed := time.monotonic() - t0) < a.seconds:
            due = int(elapsed * msgs_per_s)
            if k >= due:
                await asyncio.sleep(1 / msgs_per_s)  # paced publisher
                continue
            well = k % wells
            ts = time.time_ns() // 1000
            items = [{"tag": f"t{j:02d}", "ts": ts, "value": float(k)} for j in range(per_msg)]
            await c.publish(f"{a.prefix}/acme/g{well:03d}", orjson.dumps({"items": items}), qos=0)
            published += per_msg
            k += 1
        measuring = False
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"published": published, "seconds": a.seconds, "received": received, "dropped": dropped,
                      "load_cpu_s": time.process_time(), "server_p99": pct(server, 99), "server_p50": pct(server, 50),
                      "lat_p50": pct(lat, 50), "lat_p99": pct(lat, 99), "lat_max": max(lat) if lat else None,
                      "samples": len(lat)}))


def run_ws_load(a: argparse.Namespace, api_port: int, mqtt_port: int, token: str, prefix: str,
                subscribers: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--ws-child", "--api-port", str(api_port), "--mqtt-port", str(mqtt_port),
           "--token", token, "--prefix", prefix, "--tags", str(a.tags), "--subscribers", str(subscribers),
           "--tags-per-subscriber", str(a.tags_per_subscriber), "--rate", str(a.rate), "--seconds", str(a.seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.seconds + 300, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"ws load failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


class GcWatch:
    """gc callback recording the duration of every collection (ms)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._t0) * 1000)


async def loop_lag(out: list[float]) -> None:
    """Event-loop lag of the daemon's loop: how late a 10 ms timer fires."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(0.01)
        out.append((loop.time() - t - 0.01) * 1000)


# ---------------------------------------------------------------------------------------------- main


async def main(a: argparse.Namespace) -> dict[str, Any]:
    t_setup = time.monotonic()
    pg = PgServer(timescaledb=True)
    pg.start()
    broker = Mosquitto()
    broker.start()
    result: dict[str, Any] = {"quick": a.quick, "tags": a.tags, "days": a.days}
    try:
        db = pg.create_database()
        token = new_token("acme")
        prefix = f"b{uuid.uuid4().hex[:6]}"
        state = Path(tempfile.mkdtemp(prefix="ingestd-bench-api-"))
        cfg = make_config(
            state_dir=state,
            tenants=[{"slug": "acme", "dsn": pg.dsn(db), "pool": {"command_timeout": "1h", "max_size": 4},
                      "api_tokens": [{"name": "bench", "hash": hash_token(token), "scopes": ["admin"]}]}],
            sources=[{"name": "field", "protocol": "mqtt", "tenant": "acme",
                      "connection": {"host": "127.0.0.1", "port": broker.port, "client_id": f"ingestd-{prefix}"},
                      "subscriptions": [{"topic": f"{prefix}/acme/{{well}}", "tag": "{well}.{key}",
                                         "items_path": "items", "key_path": "tag", "timestamp_unit": "us",
                                         "qos": 0}]}],
        )
        cfg["api"] = {"listen": "127.0.0.1:0"}
        async with running_daemon(cfg, extensions=[ApiExtension()]) as d:
            tp = d.tenants["acme"]
            await eventually(lambda: tp.db_healthy, timeout=60, what="tenant database")
            if a.days:
                result.update(await load_history(tp, a.tags, a.days, now_us()))
            await publish(broker.port, prefix, a.tags, now_us())
            await eventually(lambda: len(tp.registry) >= a.tags, timeout=60, what="live values of every tag")
            result["setup_s"] = round(time.monotonic() - t_setup, 1)
            base = f"http://127.0.0.1:{d.api_port}"
            if a.days:
                log("measuring series and latest")
                result.update(await http_bench(base, token, a.tags, a.requests))
            held = 0
            for subs in a.subscriber_steps:
                log(f"stream load: {subs} subscribers at {a.rate:g} points/s for {a.seconds:g} s")
                before = d.metrics.points_received.labels("acme", "field")._value.get()
                cpu0 = time.process_time()
                lags: list[float] = []
                gc_watch = GcWatch()
                gc.callbacks.append(gc_watch)
                monitor = asyncio.create_task(loop_lag(lags))
                prof = None
                if os.environ.get("BENCH_PROFILE"):
                    import cProfile
                    prof = cProfile.Profile()
                    prof.enable()
                r = await asyncio.to_thread(run_ws_load, a, d.api_port or 0, broker.port, token, prefix, subs)
                monitor.cancel()
                if prof is not None:
                    prof.disable()
                    prof.dump_stats(os.environ["BENCH_PROFILE"])
                gc.callbacks.remove(gc_watch)
                r["gc_max_ms"] = max(gc_watch.pauses, default=0.0)
                r["gc_total_ms"] = sum(gc_watch.pauses)
                r["daemon_cpu_s"] = time.process_time() - cpu0
                r["daemon_loop_lag_p99_ms"] = pct(lags, 99)
                r["daemon_loop_lag_max_ms"] = max(lags) if lags else 0.0
                ingested = d.metrics.points_received.labels("acme", "field")._value.get() - before
                ok = r["lat_p99"] < 200 and r["dropped"] == 0 and ingested >= 0.99 * r["published"]
                log(f"  p99 {r['lat_p99']:.1f} ms, dropped {r['dropped']}, ingested {ingested:.0f}/{r['published']}")
                result.setdefault("ws_steps", []).append({"subscribers": subs, **{k: (round(v, 2) if isinstance(
                    v, float) else v) for k, v in r.items()}, "ingested": int(ingested), "held": ok})
                if ok:
                    held = subs
                    result.update(ws_added_latency_p50_ms=round(r["lat_p50"], 2),
                                  ws_added_latency_p99_ms=round(r["lat_p99"], 2),
                                  ws_points_per_s=round(r["published"] / r["seconds"]),
                                  ws_values_delivered=r["received"])
                else:
                    break
            result["ws_subscribers"] = held
    finally:
        broker.close()
        pg.close()
    return result


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1,000 tags × 7 days, 10 s of stream load")
    p.add_argument("--tags", type=int, default=None)
    p.add_argument("--days", type=int, default=None)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--rate", type=float, default=10_000.0, help="points/s published during the stream load")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--subscribers", type=int, default=None)
    p.add_argument("--subscriber-steps", type=str, default="200,400")
    p.add_argument("--tags-per-subscriber", type=int, default=50)
    # child mode
    p.add_argument("--ws-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--api-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mqtt-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.tags = a.tags or (1000 if a.quick else 10_000)
    a.days = a.days if a.days is not None else (7 if a.quick else 30)
    a.seconds = a.seconds or (10.0 if a.quick else 30.0)
    a.subscriber_steps = [a.subscribers] if a.subscribers else [int(x) for x in a.subscriber_steps.split(",")]
    if a.quick and not a.subscribers:
        a.subscriber_steps = [200]
    a.subscribers = a.subscribers or a.subscriber_steps[0]
    return a


if __name__ == "__main__":
    args = parse()
    if args.ws_child:
        asyncio.run(ws_child(args))
    else:
        res = asyncio.run(main(args))
        print(json.dumps(res))
