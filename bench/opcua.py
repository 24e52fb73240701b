"""OPC UA benchmark: one server with N monitored items changing every second → ingestd → TimescaleDB.

    .venv/bin/python bench/opcua.py [--quick] [--items 20000] [--seconds 30]

The server runs in a child process; its values change every second (spread over 10 slices) with the
SourceTimestamp set to the time of the change. ``--server node`` (default) uses node-opcua (Node.js,
installed on demand into ~/.cache/ingestd/node-opcua from the npm registry; bench/node/opcua_server.js)
because asyncua's pure-Python server cannot publish 20,000 changes/s on this machine;
``--server asyncua`` uses an asyncua Server instead. ``ingestd run`` subscribes to all items
(subscription mode, 250 ms publishing interval) and writes into a local TimescaleDB (fsync on).

Prints one JSON object on its last line: items, values_per_s (committed), p50/p99_latency_s (source
timestamp → commit, from the batch ledger), ingestd_cpu_cores, and server_cpu_cores (the asyncua server
is pure Python and is usually the first thing to saturate: when server_cpu_cores approaches 1.0 the
latency measured is the server's, not ingestd's).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

URI = "urn:wellos:bench:opcua"


async def serve(items: int, port: int) -> None:
    from asyncua import Server, ua

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(URI)
    folder = await server.nodes.objects.add_folder(ns, "Bench")
    ids = []
    for i in range(items):
        node = await folder.add_variable(ua.NodeId(f"v{i}", ns), f"v{i}", 0.0)
        ids.append(node.nodeid)
    async with server:
        print(json.dumps({"ready": True, "ns": ns}), flush=True)
        slices = 10
        per = (items + slices - 1) // slices
        tick = 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            s = tick % slices
            now = dt.datetime.now(dt.UTC)
            value = float(tick)
            for nid in ids[s * per:(s + 1) * per]:
                dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=now,
                                  ServerTimestamp=now)
                await server.write_attribute_value(nid, dv)
            tick += 1
            delay = start + tick / slices - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)


NODE_CACHE = Path.home() / ".cache" / "ingestd" / "node-opcua"


def start_server(kind: str, items: int, port: int) -> subprocess.Popen[bytes]:
    if kind == "asyncua":
        cmd, env = [sys.executable, __file__, "--serve", str(items), "--port", str(port)], None
    else:
        if not (NODE_CACHE / "node_modules" / "node-opcua-server").exists():
            NODE_CACHE.mkdir(parents=True, exist_ok=True)
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NODE_CACHE),
                            "node-opcua-server@2"], check=True, capture_output=True)
        import os

        env = {**os.environ, "NODE_PATH": str(NODE_CACHE / "node_modules")}
        cmd = ["node", str(ROOT / "bench" / "node" / "opcua_server.js"), str(items), str(port)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert child.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"OPC UA server ({kind}) exited")
        if line.startswith(b"{") and json.loads(line).get("ready"):
            return child
    raise TimeoutError("OPC UA server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--items", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--server", choices=["node", "asyncua"], default="node")
    ap.add_argument("--servers", type=int, default=1,
                    help="split the items over this many server processes (asyncua's server is the bottleneck)")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port))
        return
    import psutil

    from tests.support.daemon import DaemonProcess, make_config
    from tests.support.pg import PgServer
    from tests.support.ports import free_port

    items = args.items or (5000 if args.quick else 20000)
    seconds = args.seconds or (15.0 if args.quick else 30.0)
    k = max(1, args.servers)
    per = items // k
    ports = [free_port() for _ in range(k)]
    children = [start_server(args.server, per, p) for p in ports]
    pg = PgServer(timescaledb=True, fsync=True)
    pg.start()
    db = pg.create_database("bench")
    state = Path(tempfile.mkdtemp(prefix="bench-opcua-"))
    sources = []
    for j, port in enumerate(ports):
        tags: list[dict[str, Any]] = [{"name": f"s{j}.v{i}", "node_id": f"nsu={URI};s=v{i}"} for i in range(per)]
        sources.append({"name": f"opcua{j}", "protocol": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/bench",
                        "connect_timeout": "30s", "request_timeout": "30s", "tags": tags,
                        "subscription": {"publishing_interval": "100ms", "sampling_interval": "0s"}})
    items = per * k
    cfg = make_config(state_dir=state, tenants=[{"slug": "bench", "dsn": pg.dsn(db)}], sources=sources,
                      daemon={"log_level": "warning"})
    proc = DaemonProcess(cfg)
    result: dict[str, Any] = {"bench": "opcua", "quick": args.quick, "items": items, "servers": k,
                              "server": args.server}
    try:
        proc.start(timeout=120)
        assert proc.proc is not None
        ps = psutil.Process(proc.proc.pid)
        server_ps = [psutil.Process(c.pid) for c in children]

        def server_cpu() -> float:
            return sum(sum(p.cpu_times()[:2]) for p in server_ps)

        def count_tags() -> int:
            try:
                return int(pg.execute("SELECT count(DISTINCT tag_id) FROM readings", db)[0][0])  # type: ignore[call-overload]
            except Exception:
                return 0

        deadline = time.monotonic() + 300
        while count_tags() < items and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)
        t0 = pg.execute("SELECT now()", db)[0][0]
        cpu0, scpu0, wall0 = sum(ps.cpu_times()[:2]), server_cpu(), time.monotonic()
        time.sleep(seconds)
        cpu, scpu = sum(ps.cpu_times()[:2]) - cpu0, server_cpu() - scpu0
        wall = time.monotonic() - wall0
        t1 = pg.execute("SELECT now()", db)[0][0]
        time.sleep(3)
        rows = pg.execute(
            f"SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.99) WITHIN GROUP "
            f"(ORDER BY l) FROM (SELECT extract(epoch FROM b.committed_at - r.ts) AS l FROM readings r JOIN "
            f"ingest_batches b ON b.seq = r.batch_seq WHERE r.ts >= '{t0}' AND r.ts < '{t1}') x", db)[0]
        result.update(values_per_s=round(int(rows[0]) / float((t1 - t0).total_seconds())),  # type: ignore[call-overload]
                      p50_latency_s=round(float(rows[1] or "nan"), 3),  # type: ignore[arg-type]
                      p99_latency_s=round(float(rows[2] or "nan"), 3),  # type: ignore[arg-type]
                      ingestd_cpu_cores=round(cpu / wall, 3), server_cpu_cores=round(scpu / wall, 3),
                      seconds=round(wall, 1))
    finally:
        proc.kill()
        for c in children:
            c.kill()
        pg.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
