"""WebSocket live stream with a real client: subscriptions, latency, slow clients."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import TenantDb
from tests.support.mosquitto import Mosquitto
from tests.support.wait import eventually

from .support import ApiEnv, api_env, publish

US = 1_000_000
ROUNDS = 150


async def _recv(ws: ClientConnection, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg: dict[str, Any] = orjson.loads(await ws.recv())
            if msg["type"] == kind:
                return msg


def _now_us() -> int:
    return time.time_ns() // 1000


async def test_subscribe_snapshot_values_and_latency(env1: ApiEnv) -> None:
    await env1.ingest("acme", "w1", ["p", "q"], 1)
    url = f"{env1.ws_base}/v1/tenants/acme/stream"
    async with connect(url) as ws:  # browser style: token in the first message
        await ws.send(orjson.dumps({"type": "auth", "token": env1.tokens["acme_read"]}).decode())
        await ws.send(orjson.dumps({"type": "subscribe", "tags": ["w1.p", "w5.later"], "patterns": ["w2.*"]}).decode())
        sub = await _recv(ws, "subscribed")
        assert sub == {"type": "subscribed", "count": 1, "unknown": ["w5.later"]}
        snap = await _recv(ws, "snapshot")
        assert [i["tag"] for i in snap["items"]] == ["w1.p"] and snap["items"][0]["value"] == 0.0
        latencies: list[float] = []
        got: dict[str, int] = {}
        for k in range(40):
            now = _now_us()
            await env1.send("acme", "w1", [{"tag": "p", "ts": now, "value": float(k)},
                                           {"tag": "q", "ts": now, "value": float(k)}])  # q is not subscribed
            await env1.send("acme", "w2", [{"tag": "flow", "ts": now, "value": float(k)}])  # new tag, pattern
            while got.get("w1.p", -1) < k or got.get("w2.flow", -1) < k:
                msg = await _recv(ws, "values")
                arrived = _now_us()
                assert "w1.q" not in msg["tags"]
                for tag, value, recv in zip(msg["tags"], msg["value"], msg["recv_us"], strict=True):
                    got[tag] = int(value)
                    latencies.append((arrived - recv) / 1000)
        await env1.send("acme", "w5", [{"tag": "later", "ts": _now_us(), "value": 5.0}])
        late = await _recv(ws, "values")
        assert late["tags"] == ["w5.later"], "a named tag that appears after subscribing is delivered"
        await ws.send('{"type": "ping"}')
        await _recv(ws, "pong")
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"stream added latency: p50 {latencies[len(latencies) // 2]:.2f} ms, p99 {p99:.2f} ms")
    assert p99 < 200, latencies[-5:]


async def test_bad_messages_and_unsubscribe(env1: ApiEnv) -> None:
    await env1.ingest("acme", "w1", ["p"], 1)
    headers = {"Authorization": f"Bearer {env1.tokens['acme_read']}"}
    async with connect(f"{env1.ws_base}/v1/tenants/acme/stream", additional_headers=headers) as ws:
        for bad, parameter in (("not json", None), ('{"type": "dance"}', "type"), ("[1]", "type"),
                               ('{"type": "subscribe", "tags": ["bad tag!"]}', "tags"),
                               ('{"type": "subscribe", "patterns": "w1.*"}', "patterns")):
            await ws.send(bad)
            err = await _recv(ws, "error")
            assert err["parameter"] == parameter and err["error"]
        await ws.send('{"type": "subscribe", "patterns": ["w1.*"]}')
        assert (await _recv(ws, "subscribed"))["count"] == 1
        await ws.send('{"type": "unsubscribe", "all": true}')
        assert (await _recv(ws, "subscribed"))["count"] == 0
        await env1.send("acme", "w1", [{"tag": "p", "ts": _now_us(), "value": 1.0}])
        await env1.wait_rows("acme", 2)
        await ws.send('{"type": "ping"}')
        first = orjson.loads(await ws.recv())
        assert first["type"] == "pong", "nothing is delivered after unsubscribing"


async def _stalled_client(env: ApiEnv, path: str) -> socket.socket:
    """A WebSocket client that subscribes and then reads nothing: raw socket, tiny receive buffer."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", env.daemon.api_port or 0))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {env.tokens['acme_read']}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101")
    text = b'{"type": "subscribe", "patterns": ["w1.*"]}'
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    await loop.sock_sendall(sock, frame)
    return sock


async def test_slow_client_drops_oldest_and_never_blocks_ingest(apache_db: TenantDb, beta_apache: TenantDb,
                                                                mosquitto: Mosquitto, state_dir: Path) -> None:
    async with api_env(apache_db, beta_apache, mosquitto, state_dir, ws_queue=16, ws_flush_interval=0.0,
                       socket_sndbuf=256 * 1024) as env:
        tags = [f"t{i:03d}" for i in range(500)]
        await env.ingest("acme", "w1", tags, 1)
        path = "/v1/tenants/acme/stream"
        headers = {"Authorization": f"Bearer {env.tokens['acme_read']}"}
        slow = await _stalled_client(env, path)
        hub = env.ext.ctx.hub if env.ext.ctx else None
        assert hub is not None
        await eventually(lambda: any(c.mask.any() for c in hub.clients()), what="stalled client subscribed")
        try:
            async with connect(f"{env.ws_base}{path}", additional_headers=headers) as fast:
                await fast.send('{"type": "subscribe", "patterns": ["w1.*"]}')
                await _recv(fast, "snapshot")
                received = 0

                async def reader() -> None:
                    nonlocal received
                    while received < ROUNDS * 500:
                        msg = await _recv(fast, "values")
                        received += len(msg["tags"])

                fast_task = asyncio.create_task(reader())
                t0 = _now_us() - 3600 * US
                await publish(env.broker, [(f"{env.prefix}/acme/w1",
                                            {"items": [{"tag": t, "ts": t0 + k * US, "value": float(k)} for t in tags]})
                                           for k in range(ROUNDS)])
                await env.wait_rows("acme", 500 + ROUNDS * 500, timeout=30)  # ingest never waited for the client
                await asyncio.wait_for(fast_task, 30)  # a client that reads gets every value
                assert received == ROUNDS * 500
                clients = list(hub.clients())
                assert max(len(c.queue) for c in clients) <= 16, "per-client queue bound"
                assert sum(c.dropped_total for c in clients) > 0
            loop = asyncio.get_running_loop()
            seen = b""
            async with asyncio.timeout(20):
                while b'{"type":"dropped","count":' not in seen:
                    seen = seen[-64:] + await loop.sock_recv(slow, 65536)
        finally:
            slow.close()
        metrics = env.daemon.metrics.render().decode()
        assert 'ingestd_api_ws_dropped_messages_total{tenant="acme"}' in metrics
