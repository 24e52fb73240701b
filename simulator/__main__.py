"""``python -m simulator``: run the simulated well field on the requested protocols.

Writes ``--ready-file`` (JSON: pid, ports, protocols, wells) once every server is up and the first
values are out; stops cleanly on SIGTERM/SIGINT (the Sparkplug node sends its NDEATH).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Protocol

from ingestd.sim.layout import PROTOCOL_ORDER, Layout

from .field import Field

log = logging.getLogger("simulator")


class Server(Protocol):
    async def start(self) -> None: ...

    async def update(self, ts_ms: int) -> None: ...

    async def stop(self) -> None: ...


def _servers(args: argparse.Namespace, field: Field, layout: Layout) -> dict[str, Server]:
    """Import each protocol's server only when it is used (a missing library affects that protocol only)."""
    out: dict[str, Server] = {}
    for proto in layout.protocols:
        wells = layout.wells_of(proto)
        if not wells:
            continue
        if proto == "modbus":
            from .modbus import ModbusGateway

            out[proto] = ModbusGateway(field, wells, args.modbus_port)
        elif proto == "opcua":
            from .opcua import OpcUaField

            out[proto] = OpcUaField(field, wells, args.opcua_port)
        elif proto == "mqtt":
            from .mqtt_json import MqttJsonPublisher

            out[proto] = MqttJsonPublisher(field, wells, args.mqtt_host, args.mqtt_port)
        elif proto == "sparkplug":
            from .sparkplug import SparkplugEdgeNode

            out[proto] = SparkplugEdgeNode(field, wells, args.mqtt_host, args.mqtt_port)
    return out


async def run(args: argparse.Namespace) -> int:
    layout = Layout.of(args.wells, args.protocols.split(","))
    field = Field(args.wells, seed=args.seed, faults=not args.no_faults)
    servers = _servers(args, field, layout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started: list[Server] = []
    try:
        field.step(time.time())
        for proto, server in servers.items():
            await server.start()
            started.append(server)
            log.info("%s: wells %s", proto, layout.wells_of(proto))
        ts = int(time.time() * 1000)
        for server in started:
            await server.update(ts)
        if args.ready_file:
            ready = {"pid": os.getpid(), "modbus_port": args.modbus_port, "opcua_port": args.opcua_port,
                     "mqtt_port": args.mqtt_port, "protocols": list(servers), "wells": args.wells}
            tmp = Path(args.ready_file).with_suffix(".tmp")
            tmp.write_text(json.dumps(ready))
            tmp.replace(args.ready_file)
        stopping = asyncio.create_task(stop.wait())
        while True:
            await asyncio.wait([stopping], timeout=args.interval)
            if stop.is_set():
                break
            now = time.time()
            field.step(now)
            tick = asyncio.create_task(_tick(started, int(now * 1000)))
            await asyncio.wait([tick, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not tick.done():  # stopping while a tick hangs on a vanished broker: do not wait for it
                tick.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tick
                break
            tick.result()  # a server's failure ends the simulator (the demo reports it)
        stopping.cancel()
    finally:
        for server in reversed(started):
            await server.stop()
    return 0


async def _tick(servers: list[Server], ts_ms: int) -> None:
    for server in servers:
        await server.update(ts_ms)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulator", description="simulated oil & gas well field")
    p.add_argument("--wells", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--protocols", default=",".join(PROTOCOL_ORDER),
                   help=f"comma-separated, among {','.join(PROTOCOL_ORDER)}; wells are dealt to them in blocks")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between two updates")
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--modbus-port", type=int, default=5020)
    p.add_argument("--opcua-port", type=int, default=4840)
    p.add_argument("--no-faults", action="store_true", help="no simulated communication faults")
    p.add_argument("--ready-file", help="JSON written once every server is up")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("asyncua", "pymodbus", "aiomqtt"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
