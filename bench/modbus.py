"""Modbus benchmark: N connections × 50 registers polled every second by one ingestd process.

    .venv/bin/python bench/modbus.py [--quick] [--connections 1000] [--seconds 30] [--interval 1.0]
    .venv/bin/python bench/modbus.py --adapter-only      # adapter without pipeline/database

Default (end to end): the simulated PLCs run in a child process (a lean asyncio Modbus TCP responder),
``ingestd run`` runs as another process with one Modbus source per connection, writing into a local
TimescaleDB (fsync on). Measured over a steady window after every source has polled:

* devices, points_per_s — readings committed per second (from the database);
* ingestd_cpu_cores — CPU seconds of the ingestd process per wall second (target < 0.5);
* poll_jitter_p99_s — p99 of |Δts − interval| between consecutive samples of a tag (the source stamps
  a poll's readings with the poll time, so this is the scheduling jitter as stored);
* bad_values — stored values that differ from what the PLC serves (must be 0).

Each connection reads 10 float32 (CDAB on odd devices) + 30 int16 = 50 registers in one request.
``--adapter-only`` runs the sources in this process with a counting context instead (cpu_cores of the
adapter alone). Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.modbus.config import ModbusSourceConfig  # noqa: E402
from adapters.modbus.source import ModbusSource  # noqa: E402
from ingestd.config.load import parse_config  # noqa: E402
from ingestd.errors import SourceUnavailable  # noqa: E402
from ingestd.model import Batch  # noqa: E402
from ingestd.ports import AdapterRegistry, AdapterSpec, Point, SourceContext  # noqa: E402

FLOATS, WORDS = 10, 30
LOG = logging.getLogger("bench.modbus")
REGISTRY = AdapterRegistry([AdapterSpec("modbus", "adapters.modbus.config:ModbusSourceConfig",
                                        "adapters.modbus.source:ModbusSource")])


def registers(i: int) -> tuple[list[int], list[float]]:
    regs: list[int] = []
    values: list[float] = []
    for f in range(FLOATS):
        v = struct.unpack(">f", struct.pack(">f", i + f / 16))[0]
        hi, lo = struct.unpack(">HH", struct.pack(">f", v))
        regs += [lo, hi] if i % 2 else [hi, lo]
        values.append(v)
    for w in range(WORDS):
        v = (i * 37 + w * 101) % 65536 - 32768
        regs.append(v & 0xFFFF)
        values.append(float(v))
    return regs, values


# --- simulated PLCs (child process) ---------------------------------------------------------------

class _Plc(asyncio.Protocol):
    def __init__(self, regs: list[int]) -> None:
        self.body = struct.pack(f">{len(regs)}H", *regs)
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 12:
            tid, _, length, unit = struct.unpack(">HHHB", self.buf[:7])
            frame, self.buf = self.buf[:6 + length], self.buf[6 + length:]
            _fc, address, count = struct.unpack(">BHH", frame[7:12])
            data_ = self.body[2 * address:2 * (address + count)]
            pdu = bytes([3, len(data_)]) + data_
            assert self.transport is not None
            self.transport.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)


async def serve(n: int) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for i in range(n):
        regs, _ = registers(i)
        servers.append(await loop.create_server(lambda r=regs: _Plc(r), "127.0.0.1", 0))  # type: ignore[misc]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin


# --- the adapter under test ------------------------------------------------------------------------

class Counter:
    def __init__(self) -> None:
        self.rows = 0
        self.polls = 0
        self.overruns = 0
        self.last: dict[str, Batch] = {}
        self.started: set[str] = set()
        self.all_started = asyncio.Event()
        self.expected = 0


class _Status:
    def up(self, device: str = "") -> None:
        pass

    def down(self, reason: str, device: str = "", points: Iterable[int] | None = None) -> None:
        LOG.warning("down %s %s", device, reason)


class _Metrics:
    def __init__(self, counter: Counter) -> None:
        self.c = counter

    def count(self, event: str, n: int = 1) -> None:
        if event == "overrun":
            self.c.overruns += n

    def observe(self, op: str, seconds: float) -> None:
        pass

    def gauge(self, name: str, value: float) -> None:
        pass


def context(cfg: ModbusSourceConfig, counter: Counter, state: Path) -> SourceContext:
    points = [Point(i, "t1", t.name, t) for i, t in enumerate(cfg.tags)]

    async def emit(batch: Batch) -> None:
        counter.rows += len(batch)
        counter.polls += 1
        counter.last[cfg.name] = batch
        if cfg.name not in counter.started:
            counter.started.add(cfg.name)
            if len(counter.started) == counter.expected:
                counter.all_started.set()

    def register(tenant: str | None, tag: str, meta: dict[str, Any]) -> int:
        raise NotImplementedError

    def reject(reason: str, detail: str, payload: bytes | None, key: str) -> None:
        raise NotImplementedError

    return SourceContext(cfg.name, cfg, points, emit, _Status(), _Metrics(counter), logging.getLogger(cfg.name),
                         state, register, reject)


def source_table(i: int, port: int, interval: float) -> dict[str, Any]:
    order = "CDAB" if i % 2 else "ABCD"
    tags = [{"name": f"plc{i}.f{f}", "address": 2 * f, "type": "float32", "byte_order": order} for f in range(FLOATS)]
    tags += [{"name": f"plc{i}.w{w}", "address": 2 * FLOATS + w, "type": "int16"} for w in range(WORDS)]
    return {"name": f"plc{i}", "protocol": "modbus", "host": "127.0.0.1", "port": port, "poll_interval": interval,
            "timeout": "2s", "tags": tags}


async def run(connections: int, seconds: float, interval: float) -> dict[str, Any]:
    child = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", str(connections),
                                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdin is not None
    ports = json.loads(await child.stdout.readline())
    cfg = parse_config({"tenants": [{"slug": "t1", "dsn": "env:UNUSED"}],
                        "sources": [source_table(i, p, interval) for i, p in enumerate(ports)]}, REGISTRY)
    counter = Counter()
    counter.expected = connections
    state = Path(tempfile.mkdtemp(prefix="bench-modbus-"))
    sources = [(ModbusSource(c), context(c, counter, state)) for c in cfg.sources]  # type: ignore[arg-type]

    async def keep(src: ModbusSource, ctx: SourceContext) -> None:
        while True:
            try:
                await src.run(ctx)
            except SourceUnavailable:
                await asyncio.sleep(1)

    tasks = [asyncio.create_task(keep(s, c)) for s, c in sources]
    try:
        await asyncio.wait_for(counter.all_started.wait(), 30 + 2 * interval)
        await asyncio.sleep(2 * interval)  # warm-up: every source polled, caches warm
        rows0, polls0, over0 = counter.rows, counter.polls, counter.overruns
        wall0, cpu0 = time.monotonic(), time.process_time()
        await asyncio.sleep(seconds)
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        rows, polls, overruns = counter.rows - rows0, counter.polls - polls0, counter.overruns - over0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        child.stdin.close()
        await asyncio.wait_for(child.wait(), 10)

    bad = 0
    for i, c in enumerate(cfg.sources):
        _, expected = registers(i)
        batch = counter.last[c.name]
        bad += int(np.count_nonzero(batch.value != np.asarray(expected)))
    return {
        "connections": connections, "registers_per_connection": 2 * FLOATS + WORDS, "interval_s": interval,
        "seconds": round(wall, 2), "cpu_cores": round(cpu / wall, 3), "points_per_s": round(rows / wall),
        "polls_per_s": round(polls / wall, 1), "overruns": overruns, "bad_values": bad,
        "cpu_us_per_poll": round(1e6 * cpu / max(polls, 1), 1),
    }


def run_daemon(connections: int, seconds: float, interval: float) -> dict[str, Any]:
    """End to end: PLC child process → ingestd process → TimescaleDB."""
    import psutil

    from tests.support.daemon import DaemonProcess, make_config
    from tests.support.pg import PgServer

    child = subprocess.Popen([sys.executable, __file__, "--serve", str(connections)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdin is not None
    ports = json.loads(child.stdout.readline())
    pg = PgServer(timescaledb=True, fsync=True)
    pg.start()
    db = pg.create_database("bench")
    state = Path(tempfile.mkdtemp(prefix="bench-modbus-"))
    cfg = make_config(state_dir=state, tenants=[{"slug": "bench", "dsn": pg.dsn(db)}],
                      sources=[source_table(i, p, interval) for i, p in enumerate(ports)],
                      daemon={"log_level": "warning", "log_levels": {"pymodbus": "error"}})
    proc = DaemonProcess(cfg)
    try:
        proc.start(timeout=120)
        assert proc.proc is not None
        ps = psutil.Process(proc.proc.pid)

        def stored_tags() -> int:
            try:
                return int(pg.execute("SELECT count(DISTINCT tag_id) FROM readings", db)[0][0])  # type: ignore[call-overload]
            except Exception:  # not migrated yet
                return 0

        deadline = time.monotonic() + 60 + 5 * interval
        while stored_tags() < connections * (FLOATS + WORDS) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2 * interval)  # warm-up
        t0 = pg.execute("SELECT now()", db)[0][0]
        cpu0 = sum(ps.cpu_times()[:2])
        wall0 = time.monotonic()
        time.sleep(seconds)
        cpu = sum(ps.cpu_times()[:2]) - cpu0
        wall = time.monotonic() - wall0
        t1 = pg.execute("SELECT now()", db)[0][0]
        time.sleep(1.5)  # let the last batches commit
        rows = int(pg.execute(f"SELECT count(*) FROM readings WHERE ts >= '{t0}' AND ts < '{t1}'", db)[0][0])  # type: ignore[call-overload]
        jitter = pg.execute(
            "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY abs(d - %s)), max(abs(d - %s)) FROM ("
            " SELECT extract(epoch FROM ts - lag(ts) OVER (PARTITION BY tag_id ORDER BY ts)) AS d FROM readings"
            f" WHERE ts >= '{t0}' AND ts < '{t1}') x WHERE d IS NOT NULL" % (interval, interval), db)[0]
        # decoded values as stored vs. what each PLC serves
        bad = 0
        latest = pg.execute("SELECT DISTINCT ON (t.name) t.name, r.value FROM readings r JOIN tags t USING (tag_id)"
                            " ORDER BY t.name, r.ts DESC", db)
        expected: dict[str, float] = {}
        for i in range(connections):
            _, vals = registers(i)
            for f in range(FLOATS):
                expected[f"plc{i}.f{f}"] = vals[f]
            for w in range(WORDS):
                expected[f"plc{i}.w{w}"] = vals[FLOATS + w]
        for name, value in latest:
            if expected.get(str(name)) != value:
                bad += 1
        overruns = sum(float(line.rsplit(" ", 1)[1]) for line in proc.metrics().splitlines()
                       if line.startswith("ingestd_source_events_total{") and 'event="overrun"' in line)
        return {
            "mode": "daemon", "devices": connections, "registers_per_device": 2 * FLOATS + WORDS,
            "interval_s": interval, "seconds": round(wall, 2),
            "points_per_s": round(rows / float((t1 - t0).total_seconds())),
            "ingestd_cpu_cores": round(cpu / wall, 3), "poll_jitter_p99_s": round(float(jitter[0]), 4),
            "poll_jitter_max_s": round(float(jitter[1]), 4), "overruns": int(overruns), "bad_values": bad,
            "tags_stored": len(latest),
        }
    finally:
        proc.kill()
        child.stdin.close()
        child.wait(10)
        pg.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 devices for 10 s")
    ap.add_argument("--connections", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--adapter-only", action="store_true")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    connections = args.connections or (200 if args.quick else 1000)
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    if args.adapter_only:
        result = asyncio.run(run(connections, seconds, args.interval))
    else:
        result = run_daemon(connections, seconds, args.interval)
    result["quick"] = args.quick
    print(json.dumps(result))


if __name__ == "__main__":
    main()
